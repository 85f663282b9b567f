#include "graph/key_def.hpp"

#include <array>
#include <fmt/format.h>

namespace kiln::detail {

std::string_view key_type_name(KeyType type) {
  switch (type) {
    case KeyType::integer: return "integer";
    case KeyType::int_pair: return "int_pair";
    case KeyType::padding: return "padding";
    case KeyType::pool_pad: return "pool_pad";
    case KeyType::boolean: return "boolean";
    case KeyType::number: return "number";
    case KeyType::names: return "names";
    case KeyType::choice: return "choice";
  }
  return "?";
}

std::string_view key_field_type_name(const KeyField& field) {
  // In KeyField's order.
  constexpr std::array<std::string_view, 10> kNames = {
      "no field",       "std::int64_t",         "std::optional<std::int64_t>", "Hw",     "std::optional<Hw>",
      "Padding",        "bool",                 "double",                      "std::optional<double>",
      "Attrs::Init",
  };
  static_assert(kNames.size() == std::variant_size_v<KeyField>);
  const bool null = std::visit(
      []<class Member>(Member member) {
        if constexpr (std::is_same_v<Member, std::monostate>) return false;
        else return member == nullptr;
      },
      field);
  return null ? "a null member pointer" : kNames[field.index()];
}

void check_key_fields(std::string_view owner, std::span<const KeyDef> keys) {
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const KeyDef& key = keys[i];
    for (std::size_t before = 0; before < i; ++before)
      if (keys[before].name == key.name) throw std::logic_error(fmt::format("{}: key '{}' appears twice", owner, key.name));
    if (key_field_fits(key)) continue;
    throw std::logic_error(fmt::format("{}: key '{}' is declared {} but its field is {}", owner, key.name,
                                       key_type_name(key.type), key_field_type_name(key.field)));
  }
}

}  // namespace kiln::detail
