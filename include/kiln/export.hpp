#pragma once

// kiln's shared library hides every symbol by default (-fvisibility=hidden); the public API
// is exported one declaration at a time with KILN_API, so `nm -D` lists only the API.
#if defined(_WIN32)
#define KILN_API
#else
#define KILN_API __attribute__((visibility("default")))
#endif
