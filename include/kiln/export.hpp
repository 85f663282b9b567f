#pragma once

/// @file
/// KILN_API, which marks what libkiln.so exports.

/// Marks a declaration of the public API: libkiln.so hides every symbol by default
/// (-fvisibility=hidden, and a linker version script for standard library instantiations)
/// and exports only these, so `nm -D` lists only the API.
#if defined(_WIN32)
#define KILN_API
#else
#define KILN_API __attribute__((visibility("default")))
#endif
