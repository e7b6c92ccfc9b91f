/* The agent's protocol state machine, transport-free: which job
 * configuration it runs, when it asks for the retained full model, answers
 * or re-sends a round, publishes its status, joins a new run, waits after a
 * finished one or stops. It takes events and returns actions; the program
 * (esgd-agent) carries the actions out over its broker link, in order, and
 * knows the topics, the data folder and the state folder.
 *
 *   agent_session *s = agent_session_new(&options, &err);
 *   carry_out(agent_session_start(s));
 *   for (;;) {                                   // the program's loop
 *       carry_out(agent_session_on_reconnect(s)); // when the link came back
 *       carry_out(agent_session_on_message(s, AGENT_MESSAGE_ROUND_MODEL, data, n));
 *       carry_out(agent_session_on_idle(s));      // when a wait timed out
 *   }
 *
 * AGENT_ACTION_START_RUN asks the program to load the data of
 * agent_session_config and call agent_session_join before it carries out
 * the actions after it in the same list. */
#ifndef ESGD_AGENT_SESSION_H
#define ESGD_AGENT_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/agent.h"
#include "esgd/codec.h"
#include "esgd/dataset.h"
#include "esgd/envelope.h"
#include "esgd/error.h"
#include "esgd/job.h"

typedef struct agent_session agent_session;

/* esgd-agent's exit status, carried by AGENT_ACTION_STOP. */
typedef enum agent_exit {
    AGENT_EXIT_DONE = 0,       /* the job finished */
    AGENT_EXIT_RUNTIME = 1,    /* broker, data, state: restarting may help */
    AGENT_EXIT_USAGE = 2,      /* usage, keys or job configuration: restarting cannot help */
    AGENT_EXIT_INTERRUPTED = 3 /* SIGINT/SIGTERM (the program's own) */
} agent_exit;

/* What arrived, told apart by its topic. */
typedef enum agent_message_kind {
    AGENT_MESSAGE_CONFIG,       /* the job's retained configuration */
    AGENT_MESSAGE_ROUND_MODEL,  /* the model that opens a round (full or delta) */
    AGENT_MESSAGE_LATEST_MODEL, /* the retained latest full model */
    AGENT_MESSAGE_OWN_MODEL,    /* the current full model, sent to us alone because we asked */
    AGENT_MESSAGE_OTHER         /* anything else: only shows the link is alive */
} agent_message_kind;

/* What the session subscribes to; the program makes the topic. */
typedef enum agent_channel {
    AGENT_CHANNEL_CONFIG,       /* the job's configuration */
    AGENT_CHANNEL_ROUND_MODELS, /* every round's model (a filter) */
    AGENT_CHANNEL_LATEST_MODEL, /* the retained latest full model */
    AGENT_CHANNEL_OWN_MODEL,    /* the models the coordinator sends to us alone */
    AGENT_CHANNEL_OWN_CONFIG    /* the configuration the coordinator sends to us alone (AGENT_MESSAGE_CONFIG) */
} agent_channel;

typedef enum agent_action_kind {
    AGENT_ACTION_SUBSCRIBE,      /* channel */
    AGENT_ACTION_UNSUBSCRIBE,    /* channel */
    AGENT_ACTION_START_RUN,      /* load the data of agent_session_config, then agent_session_join */
    AGENT_ACTION_SAVE_STATE,     /* agent_save(agent_session_agent) if state is kept: every save_every
                                  * new rounds or save_interval seconds, before that round's update
                                  * leaves; at the job's end; and at agent_session_on_stop */
    AGENT_ACTION_PUBLISH_UPDATE, /* data/size on round's update topic, QoS 1, not retained */
    AGENT_ACTION_PUBLISH_STATUS, /* agent_session_status_message(state) on the status topic, retained */
    AGENT_ACTION_LOG,            /* level, text */
    AGENT_ACTION_IGNORED,        /* a message refused (message, reason, text): log it rate-limited, with its
                                  * topic; already counted in agent_session_ignored */
    AGENT_ACTION_FINISHED,       /* the job finished at round: report it (the program adds what it measures) */
    AGENT_ACTION_STOP            /* exit_code; always last */
} agent_action_kind;

typedef enum agent_log_level { AGENT_LOG_INFO, AGENT_LOG_WARN, AGENT_LOG_ERROR } agent_log_level;

/* What a failing SUBSCRIBE, UNSUBSCRIBE, SAVE_STATE or PUBLISH_* means. */
typedef enum agent_on_failure {
    AGENT_ON_FAILURE_WARN,         /* log a warning and go on */
    AGENT_ON_FAILURE_STOP,         /* log an error and stop with AGENT_EXIT_RUNTIME */
    AGENT_ON_FAILURE_STOP_QUIETLY  /* stop with AGENT_EXIT_RUNTIME, no line (the missed-round fetch) */
} agent_on_failure;

typedef struct agent_action {
    agent_action_kind kind;
    agent_on_failure on_failure;
    agent_channel channel;          /* SUBSCRIBE, UNSUBSCRIBE */
    uint32_t round;                 /* PUBLISH_UPDATE, FINISHED */
    const uint8_t *data;            /* PUBLISH_UPDATE: the signed update, valid until the next event */
    size_t size;
    agent_state state;              /* PUBLISH_STATUS: online, syncing or done */
    agent_log_level level;          /* LOG */
    agent_message_kind message;     /* IGNORED: what was refused ... */
    esgd_status reason;             /* ... and why */
    const char *text;               /* LOG, IGNORED; valid until the next event */
    int exit_code;                  /* STOP: an agent_exit */
} agent_action;

/* The actions for one event, to be carried out in order; valid until the
 * next call on the session. */
typedef struct agent_actions {
    const agent_action *list;
    uint32_t count;
} agent_actions;

typedef struct agent_session_options {
    const char *job;               /* the job served (borrowed; outlives the session) */
    uint32_t id;                   /* this agent's id */
    const signing_key *key;        /* ours: updates and status (copied) */
    const verify_key *coordinator; /* every configuration and model must carry its signature (copied) */
    uint32_t config_timeout;       /* seconds to wait for the first configuration; 0: forever */
    uint32_t save_every;           /* SAVE_STATE every this many new rounds answered; 0 or 1: every round */
    double save_interval;          /* ... or when this many seconds have passed since the last save, at the
                                    * next new round, whichever comes first; 0: by rounds only */
    double (*clock)(void *ctx);    /* monotonic seconds (runtime.h's monotonic_seconds, or a test's) */
    void *clock_ctx;
} agent_session_options;

/* ESGD_ERR_ARG without job, keys or clock; ESGD_ERR_NOMEM. */
agent_session *agent_session_new(const agent_session_options *options, esgd_error *err);
void agent_session_free(agent_session *s); /* NULL is a no-op */

/* Events. Each returns the actions it calls for (none: count 0). */
agent_actions agent_session_start(agent_session *s);    /* once, with the link up */
agent_actions agent_session_on_message(agent_session *s, agent_message_kind kind, const uint8_t *data,
                                       size_t size);
agent_actions agent_session_on_reconnect(agent_session *s); /* the link connected again */
agent_actions agent_session_on_idle(agent_session *s);      /* a wait for a message timed out */
/* The program stops (a signal, an error): SAVE_STATE if rounds were
 * answered since the last save. Then free the session. */
agent_actions agent_session_on_stop(agent_session *s);

/* After AGENT_ACTION_START_RUN: builds the agent of the new run on shard
 * (borrowed; must outlive the run, that is until the next START_RUN or
 * agent_session_free), shard index of parts. Errors of agent_new
 * (ESGD_ERR_ARG: the configuration does not fit this build). The program
 * may then restore the agent's state (agent_session_agent) before it
 * carries out the remaining actions. */
esgd_status agent_session_join(agent_session *s, const esgd_dataset *shard, uint32_t shard_index,
                               uint32_t shard_parts, esgd_error *err);

/* The run's configuration: the one joined, or the one START_RUN asks for. */
const esgd_job_config *agent_session_config(const agent_session *s);
/* The agent of the joined run; NULL before one is joined. */
esgd_agent *agent_session_agent(agent_session *s);
/* A run found already finished before we took part in it (0: none). */
uint64_t agent_session_finished_run(const agent_session *s);
/* Messages refused so far, by reason (ESGD_STATUS_COUNT entries). */
const uint64_t *agent_session_ignored(const agent_session *s);

/* Our status now (run, last answered round, generation, shard and data
 * fingerprint once joined), encoded and signed; *msg is valid until the
 * next call. Codec and signature errors (an invalid job name). */
esgd_status agent_session_status_message(agent_session *s, agent_state state, const uint8_t **msg, size_t *size,
                                         esgd_error *err);

#endif
