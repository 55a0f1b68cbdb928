//! A block file from the store, as `verify-data` reads it back into samples (a store can be
//! altered; what it holds is outside input).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgeward_platform::parquet_block::decode_block(data.to_vec());
});
