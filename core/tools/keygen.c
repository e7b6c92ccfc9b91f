/* esgd-keygen: the Ed25519 key pairs of a job, one per owner, written into
 * a folder as envelope.h describes: coordinator.key/.pub and
 * agent-<id>.key/.pub. Existing key pairs are kept, so it can be rerun to
 * add agents. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "esgd/cli.h"
#include "esgd/envelope.h"

/* Makes DIR/NAME.key and .pub unless the .key is there already. */
static int make_pair(const char *dir, const char *name, unsigned *made)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (access(path, F_OK) == 0)
        return 0;
    esgd_error err = {0};
    if (keys_generate(dir, name, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-keygen: %s\n", err.message);
        return 1;
    }
    (*made)++;
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    uint32_t agents = 0;
    const cli_option options[] = {
        {"dir", CLI_STRING, &dir, "folder for the key files (created mode 0700 if missing)"},
        {"agents", CLI_UINT, &agents, "make agent-0 .. agent-(N-1) besides the coordinator's pair"},
    };
    const cli_program program = {
        .name = "esgd-keygen",
        .summary = "usage: esgd-keygen --dir DIR --agents N\n"
                   "Writes the job's Ed25519 key pairs: DIR/coordinator.key/.pub and DIR/agent-<id>.key/.pub.\n"
                   "Give each gateway its own agent-<id>.key and coordinator.pub, and the coordinator its\n"
                   "coordinator.key and every agent-<id>.pub (esgd-agent and esgd-coordinator --keys DIR).",
        CLI_OPTIONS(options),
        .epilogue = "exit status: 0 done (existing pairs are kept), 1 cannot write, 2 bad usage",
    };
    int rc = cli_parse(&program, argc, argv, NULL);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? 0 : 2;
    if (!dir || !*dir) {
        fprintf(stderr, "esgd-keygen: --dir is required (see --help)\n");
        return 2;
    }
    esgd_error err = {0};
    if (envelope_init(&err) != ESGD_OK) {
        fprintf(stderr, "esgd-keygen: %s\n", err.message);
        return 1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "esgd-keygen: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    unsigned made = 0;
    if (make_pair(dir, "coordinator", &made) != 0)
        return 1;
    for (uint32_t a = 0; a < agents; a++) {
        char name[KEY_NAME_MAX];
        keys_agent_name(name, a);
        if (make_pair(dir, name, &made) != 0)
            return 1;
    }
    fprintf(stderr, "esgd-keygen: %u new key pair(s) in %s (coordinator and %u agents in all)\n", made, dir, agents);
    return 0;
}
