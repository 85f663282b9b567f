#!/usr/bin/env bash
# libkiln.so exports kiln's API and nothing else, and carries a SONAME with the major version.
#
#   check_symbols.sh LIBKILN MAJOR
#
# Every defined dynamic symbol (nm -D --defined-only --demangle) must be in namespace kiln —
# a function or static member, or the typeinfo, typeinfo name or vtable of a kiln class
# (exceptions are caught across the library boundary by their typeinfo) — and in none of
# the internal namespaces (kiln::detail, kiln::cuda, kiln::math, kiln::trace). Nothing is
# allowlisted beyond that: standard library instantiations are kept out by cmake/kiln.map.
# A few API entry points must be present, so that a library that exports nothing fails too.
set -uo pipefail

lib=$1
major=$2
status=0

soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
if [ "$soname" != "libkiln.so.$major" ]; then
  echo "FAILED: SONAME of $lib is '$soname', expected libkiln.so.$major"
  status=1
fi

symbols=$(nm -D --defined-only --demangle "$lib" | cut -d' ' -f3-)
if [ -z "$symbols" ]; then
  echo "FAILED: nm -D --defined-only lists nothing for $lib"
  exit 1
fi

api='^(kiln::|typeinfo for kiln::|typeinfo name for kiln::|vtable for kiln::)'
internal='^(typeinfo for |typeinfo name for |vtable for )?kiln::(detail|cuda|math|trace|cli)::'
foreign=$(grep -Ev "$api" <<<"$symbols")
leaked=$(grep -E "$internal" <<<"$symbols")
if [ -n "$foreign" ]; then
  echo "FAILED: $lib exports symbols outside namespace kiln ($(wc -l <<<"$foreign")):"
  head -n 20 <<<"$foreign" | sed 's/^/    /'
  status=1
fi
if [ -n "$leaked" ]; then
  echo "FAILED: $lib exports kiln internals ($(wc -l <<<"$leaked")):"
  head -n 20 <<<"$leaked" | sed 's/^/    /'
  status=1
fi

for expected in 'kiln::compile(kiln::Graph const&, kiln::Target const&, kiln::CompileOptions const&)' \
                'kiln::Plan::predict(unsigned char const*, long)' 'kiln::Trainer::fit(kiln::Splits const&)' \
                'kiln::GraphBuilder::build() const' 'kiln::load_spec(' 'kiln::cuda_device_count()' \
                'typeinfo for kiln::GraphError' 'typeinfo for kiln::Error' 'vtable for kiln::CheckpointError'; do
  if ! grep -qF "$expected" <<<"$symbols"; then
    echo "FAILED: $lib does not export $expected"
    status=1
  fi
done

[ $status -eq 0 ] && echo "ok: $lib ($soname) exports $(wc -l <<<"$symbols") symbols, all of kiln's API"
exit $status
