// check.hpp: the unit tests' tiny harness. Each test binary prints one line
// per failed check and ends with "N passed, N failed"; exit status 1 on failure.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace check {

struct Registry {
    std::vector<std::pair<const char *, std::function<void()>>> tests;
    int passed = 0, failed = 0;
    bool current_failed = false;
    static Registry &get() { static Registry r; return r; }
};

struct Add {
    Add(const char *name, std::function<void()> fn) { Registry::get().tests.emplace_back(name, fn); }
};

inline void fail(const char *file, int line, const std::string &what) {
    std::printf("  FAIL %s:%d: %s\n", file, line, what.c_str());
    Registry::get().current_failed = true;
}

inline int run_all() {
    auto &r = Registry::get();
    for (auto &t : r.tests) {
        r.current_failed = false;
        try {
            t.second();
        } catch (const std::exception &e) {
            fail(t.first, 0, std::string("exception: ") + e.what());
        }
        std::printf("%s %s\n", r.current_failed ? "not ok" : "ok", t.first);
        if (r.current_failed) r.failed++; else r.passed++;
    }
    std::printf("%d passed, %d failed\n", r.passed, r.failed);
    return r.failed ? 1 : 0;
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST(name) \
    static void name(); \
    static check::Add CHECK_CAT(add_, name)(#name, name); \
    static void name()
#define CHECK(cond) do { if (!(cond)) check::fail(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_EQ(a, b) do { auto _a = (a); auto _b = (b); if (!(_a == _b)) \
    check::fail(__FILE__, __LINE__, std::string(#a " == " #b)); } while (0)
#define TEST_MAIN() int main() { return check::run_all(); }
