// fingerprint.hpp: Avro Parsing Canonical Form, CRC-64-AVRO fingerprints,
// single-object encoding header and base64url (plain C++, no Postgres).
#pragma once

#include <cstdint>
#include <string>

namespace creek {

// Parsing Canonical Form of an Avro schema given as JSON text (rules PRIMITIVES,
// FULLNAMES, STRIP, ORDER, STRINGS, INTEGERS, WHITESPACE of the Avro
// specification). Logical types are stripped (a primitive with a logicalType
// becomes the bare primitive name). Throws std::invalid_argument with a
// readable message when the JSON is not a valid schema.
std::string canonical_form(const std::string &schema_json);

// CRC-64-AVRO (the Rabin fingerprint of the specification) of a byte string.
uint64_t crc64_avro(const std::string &bytes);

// The 8 little-endian fingerprint bytes.
std::string fingerprint_bytes(uint64_t fp);

// The 10-byte single-object encoding header: C3 01 + 8 little-endian bytes.
std::string single_object_header(uint64_t fp);

// base64url with padding ('-' and '_', '=' padding), and its inverse (returns
// false on bad input).
std::string base64url_encode(const std::string &bytes);
bool base64url_decode(const std::string &text, std::string &out);

}  // namespace creek
