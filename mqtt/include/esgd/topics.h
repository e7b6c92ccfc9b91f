/* The topic names of a job (schemas/messages.md, "Topics"):
 *
 *   esgd/<job>/config                    retained job configuration
 *   esgd/<job>/model                     retained latest full model
 *   esgd/<job>/round/<t>/model           model that opens round t (full or delta)
 *   esgd/<job>/round/<t>/grad/<agent>    agent's update for round t, QoS 1
 *   esgd/<job>/status/<agent>            retained agent status (Last Will: offline)
 *   esgd/<job>/agent/<agent>/model       the current full model for one agent that asked
 *   esgd/<job>/agent/<agent>/config      the job configuration for one agent that asked
 */
#ifndef ESGD_TOPICS_H
#define ESGD_TOPICS_H

#include <stdbool.h>
#include <stdint.h>

#define TOPIC_MAX 160

typedef enum topic_kind {
    TOPIC_UNKNOWN,
    TOPIC_CONFIG,
    TOPIC_LATEST_MODEL,
    TOPIC_ROUND_MODEL,
    TOPIC_ROUND_GRAD,
    TOPIC_STATUS,
    TOPIC_LEASE,
    TOPIC_AGENT_MODEL,
    TOPIC_AGENT_CONFIG
} topic_kind;

typedef struct topic_info {
    topic_kind kind;
    uint32_t round; /* ROUND_MODEL, ROUND_GRAD */
    uint32_t agent; /* ROUND_GRAD, STATUS, AGENT_MODEL, AGENT_CONFIG */
} topic_info;

void topic_config(char out[TOPIC_MAX], const char *job);
void topic_latest_model(char out[TOPIC_MAX], const char *job);
void topic_round_model(char out[TOPIC_MAX], const char *job, uint32_t round);
void topic_round_grad(char out[TOPIC_MAX], const char *job, uint32_t round, uint32_t agent);
void topic_status(char out[TOPIC_MAX], const char *job, uint32_t agent);
void topic_agent_model(char out[TOPIC_MAX], const char *job, uint32_t agent);
void topic_agent_config(char out[TOPIC_MAX], const char *job, uint32_t agent);
void topic_lease(char out[TOPIC_MAX], const char *job); /* retained: which coordinator runs the job */

/* Subscription filters: every round's model, every update, every status, everything of the job. */
void topic_filter_round_models(char out[TOPIC_MAX], const char *job);
void topic_filter_grads(char out[TOPIC_MAX], const char *job);
void topic_filter_status(char out[TOPIC_MAX], const char *job);
void topic_filter_all(char out[TOPIC_MAX], const char *job);

/* Which of the job's topics this is; TOPIC_UNKNOWN for anything else
 * (another job, malformed numbers, extra levels). */
topic_info topic_parse(const char *topic, const char *job);

/* True when topic is one of the job's topics with each '.' of the job name
 * turned into a level separator: a broker that maps '.' to '/' (RabbitMQ's
 * MQTT plugin does, its routing keys being dot-separated) delivers the
 * job's messages there, where nothing recognises them. */
bool topic_splits_job_name(const char *topic, const char *job);

#endif
