// The batch signature and chain rules of the wire format (proto/tripline/v1/event.proto), shared by
// the agent that signs and the collector that verifies:
//   signature   = Ed25519(key, "tripline/v1/batch\0" || batch bytes)
//   prev_digest = BLAKE2b-256(previous batch bytes), 32 zero bytes before the first batch.
#pragma once

#include <string>
#include <string_view>

#include "platform/crypto/signing_key.h"

namespace tripline {

// The domain-separation prefix (including its NUL), so a batch signature can never be replayed as a
// signature over anything else.
std::string_view BatchSignatureContext();

// Signs serialized EventBatch bytes.
std::string SignBatch(const SigningKey& key, std::string_view batch_bytes);

// True when `signature` signs `batch_bytes` under `public_key` with the batch context.
bool VerifyBatchSignature(std::string_view public_key, std::string_view batch_bytes,
                          std::string_view signature);

// The chain digest of serialized batch bytes.
std::string ChainDigest(std::string_view batch_bytes);

// The prev_digest of the first batch: 32 zero bytes.
std::string GenesisDigest();

}  // namespace tripline
