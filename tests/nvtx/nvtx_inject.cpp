// An NVTX injection library for tests: loaded by any program that uses NVTX3 when
// NVTX_INJECTION64_PATH names it, it records every domain range push and pop, with the
// domain's name, to the file named by KILN_NVTX_LOG — what Nsight Systems would show.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nvtx3/nvToolsExt.h>
#include <string>

namespace {

std::mutex g_mutex;
std::FILE* g_log = nullptr;
std::map<nvtxDomainHandle_t, std::string>* g_domains = nullptr;
int g_next_domain = 1;

std::string domain_name(nvtxDomainHandle_t d) {
  auto it = g_domains->find(d);
  return it == g_domains->end() ? "?" : it->second;
}

nvtxDomainHandle_t NVTX_API create_domain(const char* name) {
  std::lock_guard lock(g_mutex);
  auto handle = reinterpret_cast<nvtxDomainHandle_t>(static_cast<std::uintptr_t>(g_next_domain++));
  (*g_domains)[handle] = name ? name : "";
  return handle;
}

int NVTX_API push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t* attrs) {
  std::lock_guard lock(g_mutex);
  const char* message = attrs && attrs->messageType == NVTX_MESSAGE_TYPE_ASCII ? attrs->message.ascii : "";
  std::fprintf(g_log, "push %s %s\n", domain_name(domain).c_str(), message);
  std::fflush(g_log);
  return 0;
}

int NVTX_API pop(nvtxDomainHandle_t domain) {
  std::lock_guard lock(g_mutex);
  std::fprintf(g_log, "pop %s\n", domain_name(domain).c_str());
  std::fflush(g_log);
  return 0;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get_table) {
  const char* path = std::getenv("KILN_NVTX_LOG");
  g_log = std::fopen(path ? path : "/dev/stderr", "w");
  if (!g_log) return 0;
  g_domains = new std::map<nvtxDomainHandle_t, std::string>();
  auto* callbacks = static_cast<const NvtxExportTableCallbacks*>(get_table(NVTX_ETID_CALLBACKS));
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (!callbacks || !callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &table, &size)) return 0;
  if (size <= NVTX_CBID_CORE2_DomainRangePop) return 0;
  *table[NVTX_CBID_CORE2_DomainCreateA] = reinterpret_cast<NvtxFunctionPointer>(&create_domain);
  *table[NVTX_CBID_CORE2_DomainRangePushEx] = reinterpret_cast<NvtxFunctionPointer>(&push);
  *table[NVTX_CBID_CORE2_DomainRangePop] = reinterpret_cast<NvtxFunctionPointer>(&pop);
  return 1;
}
