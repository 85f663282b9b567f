#pragma once

#include <memory>

#include "backend/executor.hpp"
#include "kiln/train.hpp"

namespace kiln {

// The executor a run asks for: the CPU backend, or the CUDA backend with its options.
std::unique_ptr<detail::Executor> make_executor(const Graph& graph, std::int64_t batch, const RunOptions& run, int threads);

}  // namespace kiln
