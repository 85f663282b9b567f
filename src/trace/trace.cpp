#include "trace/trace.hpp"

#if KILN_HAVE_NVTX
#include <nvtx3/nvToolsExt.h>

namespace kiln::trace {

namespace {

nvtxDomainHandle_t domain() {
  static nvtxDomainHandle_t d = nvtxDomainCreateA("kiln");
  return d;
}

}  // namespace

void push(const char* name) {
  nvtxEventAttributes_t attrs{};
  attrs.version = NVTX_VERSION;
  attrs.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  attrs.messageType = NVTX_MESSAGE_TYPE_ASCII;
  attrs.message.ascii = name;
  nvtxDomainRangePushEx(domain(), &attrs);
}

void pop() { nvtxDomainRangePop(domain()); }

}  // namespace kiln::trace
#endif
