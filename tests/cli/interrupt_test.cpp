// Interrupting `kiln train`: SIGINT and SIGTERM save a checkpoint and exit 0 with a message;
// kill -9 at any moment leaves a latest checkpoint that resumes, and a run killed at random
// points and resumed each time ends on the same weights, bit for bit, as one never killed.
// And the divergence guard: a non-finite loss stops training with exit 3, naming the step
// and the layer, and leaves the last good training state as it was.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <system_error>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "run.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


// `kiln train` as a child process, stdout and stderr into files, so that it can be signalled.
class Training {
 public:
  Training(const std::vector<std::string>& args, const std::string& log) : log_(log) {
    // Everything the child needs is made before fork(): after it, only async-signal-safe calls.
    std::vector<char*> argv{const_cast<char*>(KILN_BIN), const_cast<char*>("train")};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::execv(KILN_BIN, argv.data());
      ::_exit(127);
    }
  }
  Training(const Training&) = delete;
  Training& operator=(const Training&) = delete;
  ~Training() {
    if (pid_ > 0 && status_ < 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }

  // Whether the log says `needle` within `seconds`.
  bool wait_for_log(const std::string& needle, double seconds) const {
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < until) {
      if (has(slurp(log_), needle)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);  // never kill(-1): that is every process of the user
  }
  int wait() {
    if (pid_ > 0 && status_ < 0)
      while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
      }
    return status_;
  }
  std::string log() const { return slurp(log_); }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_;
};

// The fuzz harnesses' tiny model, with the state a resume must restore beyond the weights:
// momentum, batchnorm statistics, shuffling and augmentation by step.
std::string write_model(const Scratch& s, int epochs) {
  std::string text = slurp(src("tests/fuzz/tiny.yaml"));
  text = text.substr(0, text.find("train:")) + "train: {batch: 2, epochs: " + std::to_string(epochs) +
         ", lr: 0.01, momentum: 0.9, augment: {crop: 2, flip: true}}\n";
  std::ofstream(s / "model.yaml") << text;
  return s / "model.yaml";
}

std::string synthetic(const Scratch& s, int train) {
  CliRun r = run_kiln("synth --out " + (s / "data") + " --train " + std::to_string(train) + " --test 4");
  EXPECT_EQ(r.code, 0) << r.err;
  return s / "data";
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void expect_signal_saves(int sig) {
  Scratch s(std::to_string(sig));
  const std::string model = write_model(s, 100000), data = synthetic(s, 400), out = s / "run";
  Training t({model, "--data", data, "--out", out, "--threads", "1"}, s / "log");
  ASSERT_TRUE(t.wait_for_log("epoch 1/", 60)) << t.log();  // training, with the handler installed
  t.signal(sig);
  const int status = t.wait();
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << "\n" << t.log();
  EXPECT_EQ(WEXITSTATUS(status), 0) << t.log();
  std::smatch m;
  const std::string log = t.log();
  ASSERT_TRUE(std::regex_search(log, m, std::regex("kiln train: interrupted at step ([0-9]+); saved " + out +
                                                   "/train_state.safetensors and model.safetensors. Resume with: kiln train --resume " + out)))
      << log;
  const long step = std::stol(m[1]);
  EXPECT_GT(step, 0);
  // Written by rename: no temporary file is left beside them.
  EXPECT_EQ(entries(out),
            (std::vector<std::string>{"metrics.jsonl", "model.safetensors", "run.yaml", "train_state.safetensors"}));
  // The printed command, as printed: the folder's run.yaml says the model, data and recipe.
  CliRun resumed = run_kiln("train --resume " + out + " --steps 3");
  EXPECT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(has(resumed.out, "done: " + std::to_string(step + 3) + " steps")) << resumed.out;
}

TEST(Interrupt, SigintSavesAndExitsZero) { expect_signal_saves(SIGINT); }

// Two Ctrl-Cs in a row end the run within seconds, and whatever ended it — the second signal
// (the handler gives SIGINT back its default action after the first) or the first one's save,
// which on this tiny model may win the race — the training state on disk is whole: the resume
// from it runs.
TEST(Interrupt, TwoSigintsEndTheRunAndTheLastStateResumes) {
  Scratch s("twice");
  const std::string model = write_model(s, 100000), data = synthetic(s, 400), out = s / "run";
  const std::string state = out + "/train_state.safetensors";
  Training t({model, "--data", data, "--out", out, "--threads", "1"}, s / "log");
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (!fs::exists(state) && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(fs::exists(state)) << t.log();  // epoch 1's state (200 steps of batch 2)
  t.signal(SIGINT);
  t.signal(SIGINT);
  const auto sent = Clock::now();
  const int status = t.wait();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - sent).count(), 5.0);
  // Killed by the second signal, or (if the first one's save won the race) a clean exit.
  EXPECT_TRUE((WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
      << t.log();
  CliRun resumed = run_kiln("train --resume " + out + " --steps 2");
  EXPECT_EQ(resumed.code, 0) << resumed.err;
}
TEST(Interrupt, SigtermSavesAndExitsZero) { expect_signal_saves(SIGTERM); }

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Interrupt, KilledAtRandomPointsAndResumedEndsOnTheSameWeights) {
  Scratch s("kill9");
  const std::string model = write_model(s, 60), data = synthetic(s, 40);  // 20 steps an epoch, 1,200 steps
  const std::vector<std::string> common{model, "--data", data, "--threads", "1"};
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };

  const auto start = Clock::now();
  {
    Training whole(args({"--out", s / "whole"}), s / "whole.log");
    ASSERT_EQ(whole.wait(), 0) << whole.log();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  // Six kills within a tenth of a whole run each (start-up included) leave work for the last
  // run however they fall, even when the later runs go faster than the measured one (a
  // machine less busy by then).
  std::uniform_real_distribution<double> when(0.0, seconds / 10);
  SCOPED_TRACE("kill times drawn with seed " + std::to_string(seed) + " over " + std::to_string(seconds) + " s");
  const std::string out = s / "killed", state = out + "/train_state.safetensors";
  int killed = 0, resumed = 0;
  // A resumed round is `kiln train --resume DIR` alone: run.yaml restores the rest.
  auto round_args = [&] {
    if (fs::exists(state)) return std::vector<std::string>{"--resume", out};
    return args({"--out", out});
  };
  for (int round = 0; round < 6; ++round) {
    if (fs::exists(state)) ++resumed;
    Training t(round_args(), s / "killed.log");
    // The first run is killed after its first training state, so that every later one resumes;
    // the others at any moment, their start-up included.
    if (round == 0) {
      const auto until = Clock::now() + std::chrono::seconds(60);
      while (!fs::exists(state) && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(when(rng)));
    t.signal(SIGKILL);
    const int status = t.wait();
    if (WIFSIGNALED(status)) {
      ++killed;
      continue;
    }
    // It finished before the kill came: that must be a clean exit, not a refused checkpoint.
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << t.log();
  }
  EXPECT_GE(killed, 4) << "most runs finished before their kill: the run is too short to test anything";
  EXPECT_EQ(resumed, 5);
  std::printf("%d of 6 runs killed with SIGKILL, %d resumed (kill times drawn with seed %u)\n", killed, resumed, seed);
  Training last(round_args(), s / "last.log");
  ASSERT_EQ(last.wait(), 0) << last.log();

  const std::string expected = bytes_of(s / "whole/model.safetensors"), got = bytes_of(out + "/model.safetensors");
  ASSERT_FALSE(expected.empty());
  EXPECT_TRUE(expected == got) << "the weights after " << killed << " kills differ from an uninterrupted run's";
  EXPECT_TRUE(bytes_of(s / "whole/train_state.safetensors") == bytes_of(state));
  // The best epoch's weights too: a kill between best.safetensors and the training state
  // leaves a best the resumed run computes again.
  ASSERT_FALSE(bytes_of(s / "whole/best.safetensors").empty());
  EXPECT_TRUE(bytes_of(s / "whole/best.safetensors") == bytes_of(out + "/best.safetensors"));
  // metrics.jsonl: every step once, in order, with the uninterrupted run's loss (the steps run
  // again after a kill replace the killed run's lines; the epoch lines carry times).
  auto step_lines = [](const std::string& path) {
    std::vector<std::string> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("{\"type\":\"step\",", 0) == 0) lines.push_back(line);
    return lines;
  };
  const std::vector<std::string> whole_steps = step_lines(s / "whole/metrics.jsonl");
  EXPECT_EQ(whole_steps.size(), 1200u);
  EXPECT_TRUE(step_lines(out + "/metrics.jsonl") == whole_steps) << "metrics.jsonl of the killed and resumed run";
}

// kill -9 after the last training state was written but before the weights were: the resumed
// run has no step left, and must still write them.
TEST(Interrupt, ResumingAFinishedRunWritesItsWeights) {
  Scratch s("finished");
  const std::string model = write_model(s, 2), data = synthetic(s, 40), out = s / "run";
  const std::string train = "train " + model + " --data " + data + " --out " + out + " --threads 1";
  ASSERT_EQ(run_kiln(train).code, 0);
  const std::string weights = bytes_of(out + "/model.safetensors");
  ASSERT_FALSE(weights.empty());
  fs::remove(out + "/model.safetensors");
  CliRun resumed = run_kiln(train + " --resume " + out);
  EXPECT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(has(resumed.out, "done: 40 steps")) << resumed.out;
  EXPECT_TRUE(weights == bytes_of(out + "/model.safetensors"));
}

TEST(Divergence, StopsWithExitThreeAndKeepsTheLastGoodState) {
  Scratch s("diverge");
  // Epoch 1 at lr 0.01, epoch 2 at 0.01 x 1e12: the run goes bad after its first good state.
  std::string text = slurp(write_model(s, 2));
  text.replace(text.find("lr: 0.01,"), 9, "lr: 0.01, schedule: {type: step, every: 1, gamma: 1e12},");
  std::ofstream(s / "model.yaml") << text;
  const std::string model = s / "model.yaml", data = synthetic(s, 40), out = s / "run";
  CliRun bad = run_kiln("train " + model + " --data " + data + " --out " + out + " --threads 1");
  EXPECT_EQ(bad.code, 3) << bad.err;
  // Epoch 1 was steps 1..20; the first updates at lr 1e10 make the weights non-finite.
  EXPECT_TRUE(has(bad.err, "kiln train: error: training diverged at step 2")) << bad.err;
  EXPECT_TRUE(has(bad.err, " (epoch 2): the loss is NaN")) << bad.err;
  EXPECT_TRUE(has(bad.err, "the first non-finite values are in layer 'conv1' (conv1.weight)")) << bad.err;
  EXPECT_TRUE(has(bad.err, "the last good training state is " + out + "/train_state.safetensors (after epoch 1)")) << bad.err;
  EXPECT_TRUE(has(bad.err, "hint: lower the learning rate (lr was 1e+10)")) << bad.err;
  // Resuming it diverges again, the same way, and leaves the last good state as it was.
  const std::string state = bytes_of(out + "/train_state.safetensors");
  ASSERT_FALSE(state.empty());
  CliRun again = run_kiln("train --resume " + out);
  EXPECT_EQ(again.code, 3) << again.err;
  EXPECT_TRUE(has(again.err, " (epoch 2): the loss is NaN")) << again.err;
  EXPECT_TRUE(state == bytes_of(out + "/train_state.safetensors")) << "the last good training state was overwritten";
}

}  // namespace
}  // namespace kiln::test
