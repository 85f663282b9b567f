#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::detail {

// The closest candidate to `word` by edit distance, if close enough to be a likely typo;
// empty otherwise. Used for "did you mean" hints.
std::string closest(std::string_view word, const std::vector<std::string_view>& candidates);

}  // namespace kiln::detail
