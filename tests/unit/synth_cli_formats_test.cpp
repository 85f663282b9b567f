// `kiln synth --format`: each format's directory, as the command writes it, reads back with
// load_data (detected) as the set make_synthetic gives; an unknown format is a usage error
// (exit 2) that suggests the closest name. Here rather than in tests/cli/ because it reads
// the result with the library.
#include <fmt/format.h>

#include "../cli/run.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

TEST(SynthCliFormats, EachFormatWritesWhatLoadDataReads) {
  Scratch scratch{"synth_formats"};
  for (const char* name : {"cifar10", "cifar100", "mnist", "fashion-mnist"}) {
    // The directory's name says "fashion" for Fashion-MNIST, as detection needs.
    const std::string dir = scratch / (std::string(name) + "-set");
    CliRun r = run_kiln(fmt::format("synth --format {} --out {} --train 25 --test 7 --seed 4", name, dir));
    ASSERT_EQ(r.code, 0) << name << ": " << r.err;
    EXPECT_TRUE(has(r.out, "wrote 25 train and 7 test images (seed 4) to " + dir)) << r.out;
    DataFormat format{};
    ASSERT_TRUE(parse_format(name, format));
    Splits read = load_data(dir);
    EXPECT_EQ(read.format, format) << name;
    SynthOptions o;
    o.train = 25;
    o.test = 7;
    o.seed = 4;
    o.format = format;
    Splits made = make_synthetic(o);
    EXPECT_EQ(read.train.images, made.train.images) << name;
    EXPECT_EQ(read.train.labels, made.train.labels) << name;
    EXPECT_EQ(read.test.images, made.test.images) << name;
    EXPECT_EQ(read.test.labels, made.test.labels) << name;
    EXPECT_EQ(read.train.class_names, made.train.class_names) << name;
  }
}

TEST(SynthCliFormats, UnknownFormatIsAUsageError) {
  Scratch scratch{"synth_bad_format"};
  CliRun r = run_kiln("synth --format cifar-100 --out " + (scratch / "x"));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "--format: unknown format 'cifar-100' (did you mean 'cifar100'?); the formats are cifar10, "
                         "cifar100, mnist, fashion-mnist"))
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(scratch / "x"));
  r = run_kiln("synth --format imagenet --out " + (scratch / "y"));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "unknown format 'imagenet'; the formats are")) << r.err;
}

TEST(SynthCliFormats, CountsEachFormatCanWrite) {
  Scratch scratch{"synth_counts"};
  // CIFAR-10 needs an image for each of its five training files; the others one in all.
  CliRun r = run_kiln("synth --out " + (scratch / "c10") + " --train 4 --test 1");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.err, "--train must be at least 5 (one image per data_batch file), got 4")) << r.err;
  r = run_kiln("synth --format mnist --out " + (scratch / "m") + " --train 1 --test 1");
  EXPECT_EQ(r.code, 0) << r.err;
  r = run_kiln("synth --format cifar100 --out " + (scratch / "c100") + " --train 0 --test 1");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.err, "--train must be at least 1, got 0")) << r.err;
}

}  // namespace
}  // namespace kiln::test
