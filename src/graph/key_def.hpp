#pragma once

// A spec key of an op: its name, how its value is written (KeyType), and the Attrs field
// the value goes to. The spec parser reads a value by its KeyType and writes it through the
// field, with no per-key code, so a new key lands in the field it names or nowhere: a field
// whose type does not hold the KeyType's value fails `key_field_fits`, at compile time in the
// op's file (static_assert) and for the whole table at start-up (check_key_fields).
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "kiln/graph.hpp"

namespace kiln::detail {

// How a spec key's value is written.
enum class KeyType : std::uint8_t {
  integer,    // 3
  int_pair,   // 3 or [3, 5]
  padding,    // 1, [1, 2] or same
  pool_pad,   // 1 or [1, 2]
  boolean,    // true / false
  number,     // 0.1, 1e-5, 1/9
  names,      // a layer name or a list of them (from:, which fills LayerDef::inputs, not Attrs)
  choice,     // one word of a fixed set (init: dirac)
};

// The Attrs field a key writes. std::monostate: none named (a KeyDef that forgot its field).
using KeyField = std::variant<std::monostate, std::int64_t Attrs::*, std::optional<std::int64_t> Attrs::*, Hw Attrs::*,
                              std::optional<Hw> Attrs::*, Padding Attrs::*, bool Attrs::*, double Attrs::*,
                              std::optional<double> Attrs::*, Attrs::Init Attrs::*>;

struct KeyDef {
  std::string_view name;
  KeyType type;
  KeyField field;
  bool required = false;
};

// The value a key of each KeyType parses to; its field holds that type or an optional of it.
template <KeyType type> struct KeyValue;
template <> struct KeyValue<KeyType::integer> { using type = std::int64_t; };
template <> struct KeyValue<KeyType::int_pair> { using type = Hw; };
template <> struct KeyValue<KeyType::padding> { using type = Padding; };
template <> struct KeyValue<KeyType::pool_pad> { using type = Padding; };
template <> struct KeyValue<KeyType::boolean> { using type = bool; };
template <> struct KeyValue<KeyType::number> { using type = double; };
template <> struct KeyValue<KeyType::choice> { using type = Attrs::Init; };

template <class Member> struct FieldOf;
template <class T> struct FieldOf<T Attrs::*> { using type = T; };

// Whether a field of type `Field` takes a parsed `Value` as it is (no conversion between
// number types: a double key cannot write an integer field).
template <class Field, class Value>
inline constexpr bool kFieldTakes = std::is_same_v<Field, Value> || std::is_same_v<Field, std::optional<Value>>;

template <KeyType type>
constexpr bool field_takes(const KeyField& field) {
  return std::visit(
      []<class Member>(Member member) {
        if constexpr (std::is_same_v<Member, std::monostate>) return false;
        else return member != nullptr && kFieldTakes<typename FieldOf<Member>::type, typename KeyValue<type>::type>;
      },
      field);
}

constexpr bool key_field_fits(const KeyDef& key) {
  switch (key.type) {
    case KeyType::integer: return field_takes<KeyType::integer>(key.field);
    case KeyType::int_pair: return field_takes<KeyType::int_pair>(key.field);
    case KeyType::padding: return field_takes<KeyType::padding>(key.field);
    case KeyType::pool_pad: return field_takes<KeyType::pool_pad>(key.field);
    case KeyType::boolean: return field_takes<KeyType::boolean>(key.field);
    case KeyType::number: return field_takes<KeyType::number>(key.field);
    case KeyType::choice: return field_takes<KeyType::choice>(key.field);
    case KeyType::names: return false;  // `from` is parsed into LayerDef::inputs, never into Attrs
  }
  return false;
}

constexpr bool key_fields_fit(std::span<const KeyDef> keys) {
  for (const KeyDef& key : keys)
    if (!key_field_fits(key)) return false;
  return true;
}

// "integer", "int_pair", ...: the KeyType's enumerator.
std::string_view key_type_name(KeyType type);
// "std::int64_t", "std::optional<Hw>", ..., "no field": the type of the field a KeyField names.
std::string_view key_field_type_name(const KeyField& field);

// Throws std::logic_error naming `owner` (the op's slot in its table, or param_keys()), the
// key, its KeyType and its field's type, for the first key whose field does not fit its
// type; or the first key declared twice.
void check_key_fields(std::string_view owner, std::span<const KeyDef> keys);

// Writes a parsed value of the key's KeyType through its field. Every table is checked at
// start-up (check_key_fields), so a mismatch here is a defect in kiln: it throws logic_error.
template <KeyType type>
void write_key(Attrs& attrs, const KeyDef& key, const typename KeyValue<type>::type& value) {
  using Value = typename KeyValue<type>::type;
  std::visit(
      [&]<class Member>(Member member) {
        if constexpr (!std::is_same_v<Member, std::monostate>) {
          if constexpr (kFieldTakes<typename FieldOf<Member>::type, Value>) {
            if (member && key.type == type) {
              attrs.*member = value;
              return;
            }
          }
        }
        throw std::logic_error("spec key '" + std::string(key.name) + "' (" + std::string(key_type_name(key.type)) +
                               ") cannot be written to its field (" + std::string(key_field_type_name(key.field)) + ")");
      },
      key.field);
}

}  // namespace kiln::detail
