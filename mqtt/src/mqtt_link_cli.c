/* The broker settings as command-line option rows (mqtt_link_cli.h): the
 * one place their flags and help lines are written. */
#include "esgd/mqtt_link_cli.h"

#include <string.h>

void mqtt_link_cli_options(mqtt_link_options *o, cli_option out[MQTT_LINK_CLI_OPTION_COUNT])
{
    const cli_option options[MQTT_LINK_CLI_OPTION_COUNT] = {
        {"broker", CLI_STRING, &o->broker_url, "broker URL, tcp://host:port or ssl://host:port"},
        {"connect-timeout", CLI_UINT, &o->connect_timeout_seconds, "seconds to keep trying the first connection"},
        {"username", CLI_STRING, &o->username, "broker user name"},
        {"password", CLI_STRING, &o->password, "broker password (prefer --password-file)"},
        {"password-file", CLI_STRING, &o->password_file, "file whose first line is the broker password"},
        {"ca-file", CLI_STRING, &o->ca_file, "CA bundle to verify an ssl:// broker"},
        {"cert-file", CLI_STRING, &o->cert_file, "client certificate (PEM) for an ssl:// broker"},
        {"key-file", CLI_STRING, &o->key_file, "client private key (PEM) for --cert-file"},
    };
    memcpy(out, options, sizeof options);
}
