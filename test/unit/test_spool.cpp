// test_spool.cpp: creek::Spool, the file that holds a streamed transaction's
// encoded changes until its commit (src/spool.cpp).
#include "check.hpp"
#include "spool.hpp"

#include <dirent.h>
#include <unistd.h>

#include <stdexcept>

#include <string>
#include <vector>

namespace {

std::string record(uint64_t i) {
    // sizes from 0 bytes to past the 1 MB buffer, contents derived from i
    size_t len = i % 97 == 0 ? (1 << 20) + 7 * i % 5000 : (i * 131) % 3000;
    std::string s(len, '\0');
    for (size_t k = 0; k < len; k++) s[k] = char((i * 31 + k * 7) & 0xff);
    return s;
}

std::vector<std::string> read_all(creek::Spool &sp) {
    std::vector<std::string> out;
    sp.rewind();
    const char *d;
    size_t n;
    while (sp.next(&d, &n)) out.emplace_back(d, n);
    return out;
}

size_t files_in(const std::string &dir) {
    size_t n = 0;
    if (DIR *d = opendir(dir.c_str())) {
        while (dirent *e = readdir(d))
            if (e->d_name[0] != '.') n++;
        closedir(d);
    }
    return n;
}

}  // namespace

TEST(records_read_back_in_order) {
    creek::Spool sp("/tmp");
    std::vector<std::string> want;
    for (uint64_t i = 0; i < 3000; i++) {
        want.push_back(record(i));
        sp.add(want.back().data(), want.back().size());
        if (i % 100 == 0) sp.flush();   // block ends
    }
    CHECK_EQ(sp.records(), uint64_t(3000));
    CHECK(read_all(sp) == want);
}

TEST(aborted_subtransactions_are_cut_off) {
    creek::Spool sp("/tmp");
    std::vector<std::string> want;
    auto add = [&](uint64_t i, bool keep) {
        std::string r = record(i);
        sp.add(r.data(), r.size());
        if (keep) want.push_back(r);
    };
    for (uint64_t i = 0; i < 500; i++) add(i, true);        // top level
    sp.mark_subxact(11);
    for (uint64_t i = 500; i < 700; i++) add(i, true);      // 11, released later
    sp.flush();
    sp.mark_subxact(12);
    for (uint64_t i = 700; i < 900; i++) add(i, false);     // 12: written out, then aborted
    sp.flush();
    sp.mark_subxact(13);                                     // 13 inside 12
    for (uint64_t i = 900; i < 950; i++) add(i, false);
    sp.abort_subxact(13);
    sp.abort_subxact(12);
    CHECK_EQ(sp.records(), uint64_t(700));
    sp.abort_subxact(99);                                    // spooled nothing: no-op
    for (uint64_t i = 950; i < 1000; i++) add(i, true);     // top level again
    sp.mark_subxact(14);
    for (uint64_t i = 1000; i < 1010; i++) add(i, false);   // 14: aborted while buffered
    sp.abort_subxact(14);
    sp.mark_subxact(15);
    for (uint64_t i = 1010; i < 1020; i++) add(i, true);
    CHECK_EQ(sp.records(), uint64_t(want.size()));
    CHECK(read_all(sp) == want);
}

TEST(read_part_is_given_back_to_the_file_system) {
    char tmpl[] = "/var/tmp/creek-spool-test.XXXXXX";   // a disk file system (/tmp may be tmpfs)
    std::string dir = mkdtemp(tmpl);
    {
        creek::Spool sp(dir);
        std::string r(100000, 'x');
        for (uint64_t i = 0; i < 400; i++) {   // 40 MB
            r[0] = char(i);
            sp.add(r.data(), r.size());
        }
        sp.flush();
        uint64_t full = sp.allocated();
        CHECK(full >= uint64_t(40000000));
        sp.rewind();
        const char *d;
        size_t n;
        uint64_t i = 0;
        for (; i < 300 && sp.next(&d, &n); i++)
            CHECK(n == r.size() && d[0] == char(i) && d[1] == 'x');
        CHECK_EQ(i, uint64_t(300));
        // 30 MB read: all but the last few MB of that is punched out
        CHECK(sp.allocated() <= full - uint64_t(20000000));
        for (; sp.next(&d, &n); i++) CHECK(n == r.size() && d[0] == char(i));
        CHECK_EQ(i, uint64_t(400));
        bool threw = false;
        try {
            sp.rewind();   // what was read is gone
        } catch (const std::logic_error &) {
            threw = true;
        }
        CHECK(threw);
    }
    rmdir(dir.c_str());
}

TEST(empty_spool_and_no_files_left) {
    char tmpl[] = "/tmp/creek-spool-test.XXXXXX";
    std::string dir = mkdtemp(tmpl);
    {
        creek::Spool sp(dir);
        std::string r = record(97);   // over 1 MB
        sp.add(r.data(), r.size());
        sp.flush();
        CHECK_EQ(files_in(dir), size_t(0));   // anonymous: nothing to clean up after a crash
        std::vector<std::string> got = read_all(sp);
        CHECK_EQ(got.size(), size_t(1));
        CHECK(!got.empty() && got[0] == r);
    }
    {
        creek::Spool sp(dir);
        CHECK(read_all(sp).empty());
    }
    CHECK_EQ(files_in(dir), size_t(0));
    rmdir(dir.c_str());
    bool threw = false;
    try {
        creek::Spool sp("/nonexistent/creek");
    } catch (const std::runtime_error &e) {
        threw = std::string(e.what()).find("could not create a spool file") != std::string::npos;
    }
    CHECK(threw);
}

TEST_MAIN()
