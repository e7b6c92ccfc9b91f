/* The keys of the unit tests that sign messages: derived from a fixed seed
 * as esgd-sim does, so every run signs the same bytes. A test defines
 * TEST_KEY_AGENTS (how many agent keys) before including this, and calls
 * setup_keys as its cmocka group setup. Signed test jobs run TEST_RUN. */
#ifndef ESGD_TEST_KEYS_H
#define ESGD_TEST_KEYS_H

#include "esgd/envelope.h"

#define TEST_KEY_SEED 20240611u
#define TEST_RUN 0x8000000000c0ffeeull

static signing_key coordinator_secret, agent_secret[TEST_KEY_AGENTS];
static verify_key coordinator_public, agent_public[TEST_KEY_AGENTS];

static int setup_keys(void **state)
{
    (void)state;
    if (envelope_init(NULL) != ESGD_OK)
        return -1;
    keys_derive(TEST_KEY_SEED, "coordinator", &coordinator_secret, &coordinator_public);
    for (uint32_t a = 0; a < TEST_KEY_AGENTS; a++) {
        char name[KEY_NAME_MAX];
        keys_agent_name(name, a);
        keys_derive(TEST_KEY_SEED, name, &agent_secret[a], &agent_public[a]);
    }
    return 0;
}

#endif
