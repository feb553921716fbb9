// json_text.hpp: writing JSON string literals (plain C++).
#pragma once

#include <string>

namespace creek {
// Appends s as a JSON string literal (with quotes) to out.
void json_append_string(std::string &out, const std::string &s);
std::string json_string(const std::string &s);
}  // namespace creek
