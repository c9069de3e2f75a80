#pragma once

// The other direction of messages/builders.hpp: verified messages → plain
// structs. Readers also check what the FlatBuffers verifier cannot (a union
// of a kind this build does not know, a missing segment body) and return
// errc::invalid_argument naming the field.

#include "messages/builders.hpp"

namespace mosaic {

/// Missing handle / sampling tables read as default-constructed structs.
wire::tensor_handle read_tensor_handle(const msg::TensorHandle* h);
wire::kv_handle read_kv_handle(const msg::KvHandle* h);
wire::sampling read_sampling(const msg::SamplingParams* s);

/// One prompt segment; errors on a segment of unknown kind.
result<wire::segment> read_segment(const msg::Segment& seg);

result<wire::generate_request> read_generate_request(const generate_request_msg& m);
result<wire::encode_request> read_encode_request(const encode_request_msg& m);
wire::token_event read_token_event(const token_event_msg& m);
/// A TokenLogprob vector (null: empty), at most 21 entries (the chosen
/// token and 20 alternatives) whatever the sender put in.
std::vector<wire::token_logprob>
read_token_logprobs(const flatbuffers::Vector<flatbuffers::Offset<msg::TokenLogprob>>* v);
/// A missing table reads as a default-constructed task.
wire::decode_task read_decode_task(const msg::DecodeTask* t);
wire::library_lookup_result read_library_lookup_result(const library_lookup_result_msg& m);
wire::prefill_done read_prefill_done(const prefill_done_msg& m);

} // namespace mosaic
