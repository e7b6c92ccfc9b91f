/* Timestamped log lines on stderr for the long-running programs:
 *   2026-11-25T10:04:05.123Z esgd-agent[2] round 17: published 7714 entries
 * The subject ("esgd-agent[2]", "esgd-coordinator") is set once per process. */
#ifndef ESGD_LOG_H
#define ESGD_LOG_H

void log_set_subject(const char *subject);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
