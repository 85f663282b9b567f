#!/usr/bin/env bash
# Every public header compiles on its own in a plain C++20 translation unit, warning-free,
# and pulls in nothing but kiln's own headers and the C++ standard library.
#
#   check_headers.sh CXX SOURCE_DIR BUILD_DIR
#
# The include path is only SOURCE_DIR/include and BUILD_DIR/include (the generated
# version.hpp). That alone proves little here: /usr/include holds yaml-cpp, fmt, CLI11 and
# nlohmann headers, so a stray `#include <fmt/format.h>` would still compile. What proves it
# is -H, which makes the compiler list every header it opens: each one must be kiln's own or
# one that a translation unit including every standard C++ header (each guarded by
# __has_include) also opens, i.e. part of the standard library, the C library under it or
# the compiler's own. No distribution's paths are assumed. Exit 77 (skipped) when CXX is
# missing.
set -uo pipefail

cxx=$1
src=$(cd "$2" && pwd -P)
build=$(cd "$3" && pwd -P)

if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "SKIPPED: $cxx not found"
  exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-headers.XXXXXX")
trap 'rm -rf "$work"' EXIT

flags=(-std=c++20 -fsyntax-only -H -Wall -Wextra -Wpedantic -Werror -I "$src/include" -I "$build/include")

# The headers a translation unit opens, one canonical path a line.
opened() {  # file.cpp -> stdout; compiler diagnostics in $work/diag
  "$cxx" "${flags[@]}" "$1" 2>"$work/diag" >/dev/null
  local rc=$?
  sed -n 's/^\.\+ //p' "$work/diag" | xargs -r realpath -e | sort -u
  return $rc
}

std_headers=(algorithm any array atomic barrier bit bitset cassert cctype cerrno cfenv cfloat charconv chrono cinttypes
  climits clocale cmath codecvt compare complex concepts condition_variable coroutine csetjmp csignal cstdarg cstddef
  cstdint cstdio cstdlib cstring ctime cuchar cwchar cwctype deque exception execution expected filesystem format
  forward_list fstream functional future initializer_list iomanip ios iosfwd iostream istream iterator latch limits list
  locale map memory memory_resource mutex new numbers numeric optional ostream queue random ranges ratio regex
  scoped_allocator semaphore set shared_mutex source_location span sstream stack stdexcept stop_token streambuf string
  string_view syncstream system_error thread tuple type_traits typeindex typeinfo unordered_map unordered_set utility
  valarray variant vector version)
{
  for h in "${std_headers[@]}"; do
    printf '#if __has_include(<%s>)\n#include <%s>\n#endif\n' "$h" "$h"
  done
} >"$work/std.cpp"
if ! opened "$work/std.cpp" >"$work/std.list"; then
  echo "FAILED: $cxx cannot compile the standard library reference translation unit:"
  cat "$work/diag"
  exit 1
fi

status=0
count=0
for header in "$src"/include/kiln/*.hpp; do
  name=kiln/$(basename "$header")
  printf '#include <%s>\n#include <%s>\n' "$name" "$name" >"$work/tu.cpp"  # twice: include guards
  if ! opened "$work/tu.cpp" >"$work/tu.list"; then
    echo "FAILED: <$name> does not compile on its own with $cxx ${flags[*]}:"
    grep -v '^\.\+ ' "$work/diag" | sed '/^Multiple include guards may be useful for:/,$d'
    status=1
    continue
  fi
  foreign=$(grep -v -e "^$src/include/kiln/" -e "^$build/include/kiln/" "$work/tu.list" | comm -23 - "$work/std.list")
  if [ -n "$foreign" ]; then
    echo "FAILED: <$name> includes headers outside kiln and the C++ standard library:"
    echo "$foreign" | head -n 10 | sed "s/^/    /"
    status=1
  fi
  count=$((count + 1))
done

# The umbrella header includes every public header.
for header in "$src"/include/kiln/*.hpp; do
  name=kiln/$(basename "$header")
  [ "$name" = kiln/kiln.hpp ] && continue
  if ! grep -q "#include \"$name\"" "$src/include/kiln/kiln.hpp"; then
    echo "FAILED: kiln/kiln.hpp does not include <$name>"
    status=1
  fi
done
grep -q '#include "kiln/version.hpp"' "$src/include/kiln/kiln.hpp" || { echo "FAILED: kiln/kiln.hpp does not include <kiln/version.hpp>"; status=1; }

if [ "$count" -lt 10 ]; then
  echo "FAILED: only $count headers found in $src/include/kiln"
  status=1
fi
[ $status -eq 0 ] && echo "ok: $count public headers compile alone with $cxx -std=c++20 and include only the standard library"
exit $status
