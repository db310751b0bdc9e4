/*
 * fuzz_model.c -- libFuzzer over the model test's driver (issue 6, part 2).
 *
 * The same driver and reference model as test_model.c, on virtual time,
 * but the fuzzer's input makes the choices: one byte per decision (which
 * operation, which job, which timeout, how much time passes), so coverage
 * guides the search for sequences of API calls; when the input runs out
 * the sequence ends and is torn down like any other.  Callbacks' own
 * choices come from a PRNG seeded with the first bytes, and when the first
 * byte is a multiple of 4, 3% of libaj's allocations fail.  Every check of
 * test_model.c applies; a failed one prints its message and aborts, so
 * libFuzzer keeps the input.  The core is compiled into the target so
 * that its branches are instrumented.
 *
 *   ./configure CC=clang --enable-fuzz && make tests/fuzz_model
 *   tests/fuzz_model -max_len=512 corpus/
 */
#define AJ_MODEL_FUZZ 1
#include "test_model.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = 0;
    size_t i;

    for (i = 0; i < size && i < 8; i++)
        seed = seed << 8 | data[i];
    /* a quarter of the inputs also let 3% of libaj's allocations fail */
    if (run_sequence(seed, data, size, 1000, 0, size && data[0] % 4 == 0 ? 30 : 0)) {
        fprintf(stderr, "model: %s\n", fail_msg);
        abort();
    }
    return 0;
}
