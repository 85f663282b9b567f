// The graph's op table: one entry per OpKind, from each op's own file (src/layers/), checked
// once, at first use, so that an entry in the wrong slot or missing a function stops kiln at
// start-up with the slot named instead of running the wrong shape rule.
#include <array>
#include <fmt/format.h>
#include <stdexcept>

#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

using OpGetter = const OpDef& (*)();

// In OpKind order.
constexpr auto kOpGetters = std::to_array<OpGetter>({
#define KILN_OP(op, Camel) op##_op,
#include "graph/ops.def"
});
static_assert(kOpGetters.size() == kOpCount, "one getter per OpKind, in OpKind order");

constexpr KeyDef kParamKeys[] = {
    {.name = "frozen", .type = KeyType::boolean, .field = &Attrs::frozen},
    {.name = "lr_scale", .type = KeyType::number, .field = &Attrs::lr_scale},
    {.name = "train_epochs", .type = KeyType::number, .field = &Attrs::train_epochs},
};
static_assert(key_fields_fit(kParamKeys));

[[noreturn]] void bad_slot(std::size_t slot, const OpDef& def, std::string_view problem) {
  throw std::logic_error(fmt::format("op table: slot {} ('{}') {}", slot, def.name, problem));
}

}  // namespace

std::span<const KeyDef> param_keys() { return kParamKeys; }

void check_op_table(std::span<const OpDef> table) {
  if (table.size() != kOpCount)
    throw std::logic_error(fmt::format("op table: {} entries for {} OpKinds", table.size(), kOpCount));
  for (std::size_t slot = 0; slot < table.size(); ++slot) {
    const OpDef& def = table[slot];
    if (static_cast<std::size_t>(def.kind) != slot)
      bad_slot(slot, def, fmt::format("holds OpKind {}; each entry must sit at the index of its OpKind",
                                      static_cast<int>(def.kind)));
    if (def.name.empty()) bad_slot(slot, def, "has no name");
    if (def.min_inputs > def.max_inputs)
      bad_slot(slot, def, fmt::format("takes at least {} inputs but at most {}", def.min_inputs, def.max_inputs));
    if (def.max_inputs > 0 && !def.infer) bad_slot(slot, def, "has no shape rule (infer)");
    if (def.has_params && !def.params) bad_slot(slot, def, "has parameters but no params function");
    if (!def.flops) bad_slot(slot, def, "has no flops function");
    if (!def.backward_needs) bad_slot(slot, def, "has no backward_needs function");
    check_key_fields(fmt::format("op table: slot {} ('{}')", slot, def.name), def.keys);
  }
  check_key_fields("param_keys()", kParamKeys);
}

std::span<const OpDef> op_table() {
  static const std::array<OpDef, kOpCount> table = [] {
    std::array<OpDef, kOpCount> entries{};
    for (std::size_t slot = 0; slot < kOpCount; ++slot) entries[slot] = kOpGetters[slot]();
    check_op_table(entries);
    return entries;
  }();
  return table;
}

const OpDef& op_def(OpKind kind) {
  const auto slot = static_cast<std::size_t>(kind);
  const std::span<const OpDef> table = op_table();
  if (slot >= table.size()) throw std::out_of_range(fmt::format("op_def: no op with OpKind {}", slot));
  return table[slot];
}

}  // namespace kiln::detail
