#pragma once

/// @file
/// The umbrella header: everything a program that links libkiln needs. It includes only
/// the C++ standard library besides kiln's own headers (no CUDA, cuDNN, yaml-cpp, fmt or
/// JSON headers), so it compiles in any C++20 translation unit.
#include "kiln/bench.hpp"
#include "kiln/checkpoint.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/data.hpp"
#include "kiln/device.hpp"
#include "kiln/error.hpp"
#include "kiln/export.hpp"
#include "kiln/format.hpp"
#include "kiln/graph.hpp"
#include "kiln/memory.hpp"
#include "kiln/plan.hpp"
#include "kiln/spec.hpp"
#include "kiln/train.hpp"
#include "kiln/types.hpp"
#include "kiln/version.hpp"
