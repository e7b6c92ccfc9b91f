/* The broker settings every MQTT program takes on its command line, as rows
 * of its option table (cli.h), kept apart from mqtt_link.h so the transport
 * does not depend on the command-line module.
 *
 *   cli_option broker_options[MQTT_LINK_CLI_OPTION_COUNT];
 *   mqtt_link_cli_options(&link_options, broker_options);
 *   cli_program program = {..., CLI_SHARED_OPTIONS(broker_options)};
 */
#ifndef ESGD_MQTT_LINK_CLI_H
#define ESGD_MQTT_LINK_CLI_H

#include "esgd/cli.h"
#include "esgd/mqtt_link.h"

/* broker, connect-timeout, username, password, password-file, ca-file,
 * cert-file and key-file, writing into o, which must outlive the rows. */
#define MQTT_LINK_CLI_OPTION_COUNT 8
void mqtt_link_cli_options(mqtt_link_options *o, cli_option out[MQTT_LINK_CLI_OPTION_COUNT]);

#endif
