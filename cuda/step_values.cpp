#include "cuda/step_values.hpp"

#include <cstring>
#include <string>

#include "util/checked.hpp"

namespace kiln::cuda {

namespace {

std::size_t values_bytes(std::size_t params) {
  return static_cast<std::size_t>(detail::align_up(static_cast<std::int64_t>(16 + params * sizeof(math::SgdHyper)), 256));
}

}  // namespace

std::int64_t StepValues::bytes(std::size_t params) { return static_cast<std::int64_t>(values_bytes(params)); }

StepValues::StepValues(std::size_t params)
    : params_(params), slot_bytes_(values_bytes(params)), host_(kSlots * values_bytes(params)) {}

std::byte* StepValues::next_slot() {
  const std::size_t slot = next_++ % kSlots;
  if (used_[slot]) KILN_CUDA_CHECK(cudaEventSynchronize(copied_[slot].get()));  // queued kSlots copies ago
  used_[slot] = true;
  return host_.data() + slot * slot_bytes_;
}

void StepValues::write_step(std::uint64_t step, cudaStream_t stream) {
  const std::size_t slot = next_ % kSlots;
  std::byte* host = next_slot();
  std::memcpy(host, &step, sizeof step);
  KILN_CUDA_CHECK(cudaMemcpyAsync(device_, host, sizeof step, cudaMemcpyHostToDevice, stream));
  KILN_CUDA_CHECK(cudaEventRecord(copied_[slot].get(), stream));
}

void StepValues::write_hyper(std::span<const math::SgdHyper> hyper, cudaStream_t stream) {
  const std::size_t count = hyper.size() < params_ ? hyper.size() : params_;
  if (count == 0) return;
  const std::size_t slot = next_ % kSlots;
  std::byte* host = next_slot() + kHyperOffset;
  std::memcpy(host, hyper.data(), count * sizeof(math::SgdHyper));
  KILN_CUDA_CHECK(
      cudaMemcpyAsync(device_ + kHyperOffset, host, count * sizeof(math::SgdHyper), cudaMemcpyHostToDevice, stream));
  KILN_CUDA_CHECK(cudaEventRecord(copied_[slot].get(), stream));
}

CapturedSteps::~CapturedSteps() {
  for (cudaGraphExec_t e : execs_) cudaGraphExecDestroy(e);
}

void CapturedSteps::begin(cudaStream_t stream) {
  // Thread-local: a call on this thread that would be unsafe during capture (a synchronous
  // copy, a device-wide wait) fails the capture instead of silently running outside it.
  KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
}

std::uint64_t CapturedSteps::end(cudaStream_t stream, std::string& why) {
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(stream, &graph);
  if (e != cudaSuccess || !graph) {
    why = std::string("stream capture failed: ") + cudaGetErrorString(e);
    cudaGetLastError();
    if (graph) cudaGraphDestroy(graph);
    return 0;
  }
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the instantiation keeps what it needs
  if (e != cudaSuccess) {
    why = std::string("graph instantiation failed: ") + cudaGetErrorString(e);
    cudaGetLastError();
    return 0;
  }
  execs_.push_back(exec);
  return execs_.size();
}

void CapturedSteps::launch(std::uint64_t id, cudaStream_t stream) const {
  KILN_CUDA_CHECK(cudaGraphLaunch(execs_.at(static_cast<std::size_t>(id - 1)), stream));
}

}  // namespace kiln::cuda
