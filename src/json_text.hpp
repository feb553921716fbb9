// json_text.hpp: writing JSON string literals (plain C++).
#pragma once

#include <map>
#include <string>

namespace creek {
// Appends s as a JSON string literal (with quotes) to out.
void json_append_string(std::string &out, const std::string &s);
std::string json_string(const std::string &s);
// Parses a JSON object whose values are strings, numbers, booleans or null
// (no nesting) into key -> value text (strings unescaped, \uXXXX as UTF-8).
// False (with a reason in err) for anything else.
bool json_parse_flat_object(const std::string &text, std::map<std::string, std::string> &out,
                            std::string &err);
}  // namespace creek
