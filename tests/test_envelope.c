/* Signed messages (envelope.h): sign and open, every kind of damage to a
 * signed message, messages too short to hold a signature, derived keys, and
 * the key files: written and read back, a secret file others can read, a
 * malformed file and a secret whose public half is not its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "esgd/envelope.h"

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/esgd-envelope-test-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

/* Removes every file the tests wrote (all of them directly in dir). */
static int remove_dir(void **state)
{
    (void)state;
    static const char *const names[] = {"coordinator", "agent-3", "bad", "open", "group", "swapped", "other", "x"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s.key", dir, names[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s.pub", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}

static int setup_sodium(void **state)
{
    (void)state;
    return envelope_init(NULL) == ESGD_OK ? 0 : -1;
}

/* A body of n bytes (a counter) signed with key into buf. */
static void signed_message(esgd_buffer *buf, size_t n, const signing_key *key)
{
    assert_true(buf->capacity >= n + ENVELOPE_SIGNATURE_BYTES);
    for (size_t i = 0; i < n; i++)
        buf->data[i] = (uint8_t)(i * 7 + 1);
    buf->size = n;
    assert_int_equal(envelope_sign(buf, key, NULL), ESGD_OK);
    assert_int_equal(buf->size, n + ENVELOPE_SIGNATURE_BYTES);
}

static void test_sign_and_open_round_trip(void **state)
{
    (void)state;
    signing_key secret;
    verify_key public_key;
    keys_derive(1, "agent-0", &secret, &public_key);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 1024, NULL), ESGD_OK);
    for (size_t n = 1; n < 600; n += 97) {
        signed_message(&buf, n, &secret);
        size_t body = 0;
        esgd_error err = {0};
        assert_int_equal(envelope_open(buf.data, buf.size, &public_key, &body, &err), ESGD_OK);
        assert_int_equal(body, n);
        for (size_t i = 0; i < n; i++) /* the body is left as it was */
            assert_int_equal(buf.data[i], (uint8_t)(i * 7 + 1));
    }
    /* Ed25519 is deterministic: the same body and key give the same bytes. */
    signed_message(&buf, 300, &secret);
    uint8_t first[300 + ENVELOPE_SIGNATURE_BYTES];
    memcpy(first, buf.data, buf.size);
    signed_message(&buf, 300, &secret);
    assert_memory_equal(first, buf.data, sizeof first);
    buffer_destroy(&buf);

    /* No room for the signature: refused, the body untouched. */
    assert_int_equal(buffer_init(&buf, 100 + ENVELOPE_SIGNATURE_BYTES - 1, NULL), ESGD_OK);
    memset(buf.data, 0x5a, 100);
    buf.size = 100;
    esgd_error err = {0};
    assert_int_equal(envelope_sign(&buf, &secret, &err), ESGD_ERR_TOO_LARGE);
    assert_int_equal(buf.size, 100);
    buffer_destroy(&buf);
}

static void test_wrong_key_is_refused(void **state)
{
    (void)state;
    signing_key agent0, agent1, coordinator;
    verify_key agent0_public, agent1_public, coordinator_public;
    keys_derive(1, "agent-0", &agent0, &agent0_public);
    keys_derive(1, "agent-1", &agent1, &agent1_public);
    keys_derive(1, "coordinator", &coordinator, &coordinator_public);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 512, NULL), ESGD_OK);
    signed_message(&buf, 200, &agent1);
    size_t body = 12345;
    esgd_error err = {0};
    assert_int_equal(envelope_open(buf.data, buf.size, &agent0_public, &body, &err), ESGD_ERR_SIGNATURE);
    assert_int_equal(err.status, ESGD_ERR_SIGNATURE);
    assert_true(err.message[0] != '\0');
    assert_int_equal(body, 12345); /* not set on failure */
    assert_int_equal(envelope_open(buf.data, buf.size, &coordinator_public, &body, &err), ESGD_ERR_SIGNATURE);
    assert_int_equal(envelope_open(buf.data, buf.size, &agent1_public, &body, &err), ESGD_OK);
    buffer_destroy(&buf);
}

/* Every single-bit change, in the body or in the signature, is refused. */
static void test_every_flipped_bit_is_refused(void **state)
{
    (void)state;
    signing_key secret;
    verify_key public_key;
    keys_derive(7, "coordinator", &secret, &public_key);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 512, NULL), ESGD_OK);
    signed_message(&buf, 150, &secret);
    size_t body = 0;
    for (size_t bit = 0; bit < 8 * buf.size; bit++) {
        buf.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        esgd_error err = {0};
        if (envelope_open(buf.data, buf.size, &public_key, &body, &err) != ESGD_ERR_SIGNATURE)
            fail_msg("bit %zu of %zu (%s) flipped: accepted", bit, 8 * buf.size,
                     bit < 8 * 150 ? "body" : "signature");
        buf.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* A byte added, a byte dropped, or a signature moved onto another body. */
    assert_int_equal(envelope_open(buf.data, buf.size - 1, &public_key, &body, NULL), ESGD_ERR_SIGNATURE);
    assert_int_equal(envelope_open(buf.data + 1, buf.size - 1, &public_key, &body, NULL), ESGD_ERR_SIGNATURE);
    buf.data[buf.size] = 0;
    assert_int_equal(envelope_open(buf.data, buf.size + 1, &public_key, &body, NULL), ESGD_ERR_SIGNATURE);
    uint8_t signature[ENVELOPE_SIGNATURE_BYTES];
    memcpy(signature, buf.data + 150, sizeof signature);
    signed_message(&buf, 149, &secret);
    memcpy(buf.data + 149, signature, sizeof signature);
    assert_int_equal(envelope_open(buf.data, buf.size, &public_key, &body, NULL), ESGD_ERR_SIGNATURE);
    /* The original, restored, still opens. */
    signed_message(&buf, 150, &secret);
    assert_int_equal(envelope_open(buf.data, buf.size, &public_key, &body, NULL), ESGD_OK);
    buffer_destroy(&buf);
}

/* A message must hold a body of at least one byte and the signature. */
static void test_short_messages_are_refused(void **state)
{
    (void)state;
    signing_key secret;
    verify_key public_key;
    keys_derive(3, "agent-2", &secret, &public_key);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 256, NULL), ESGD_OK);
    signed_message(&buf, 1, &secret);
    size_t body = 0;
    assert_int_equal(envelope_open(buf.data, buf.size, &public_key, &body, NULL), ESGD_OK);
    assert_int_equal(body, 1);
    for (size_t n = 0; n <= ENVELOPE_SIGNATURE_BYTES; n++) {
        uint8_t *exact = malloc(n ? n : 1); /* exact size, for ASan */
        memcpy(exact, buf.data + buf.size - n, n);
        esgd_error err = {0};
        assert_int_equal(envelope_open(exact, n, &public_key, &body, &err), ESGD_ERR_SIGNATURE);
        assert_non_null(strstr(err.message, "too short"));
        free(exact);
    }
    assert_int_equal(envelope_open(NULL, 0, &public_key, &body, NULL), ESGD_ERR_SIGNATURE);
    /* An empty body signed is still too short to be a message. */
    buf.size = 0;
    assert_int_equal(envelope_sign(&buf, &secret, NULL), ESGD_OK);
    assert_int_equal(envelope_open(buf.data, buf.size, &public_key, &body, NULL), ESGD_ERR_SIGNATURE);
    buffer_destroy(&buf);
}

static void test_derived_keys(void **state)
{
    (void)state;
    signing_key a, b, c, d;
    verify_key pa, pb, pc, pd;
    keys_derive(42, "agent-1", &a, &pa);
    keys_derive(42, "agent-1", &b, &pb);
    keys_derive(42, "agent-2", &c, &pc);
    keys_derive(43, "agent-1", &d, &pd);
    assert_memory_equal(&a, &b, sizeof a); /* the same (seed, name): the same pair */
    assert_memory_equal(&pa, &pb, sizeof pa);
    assert_memory_not_equal(&pa, &pc, sizeof pa); /* another name or seed: another pair */
    assert_memory_not_equal(&pa, &pd, sizeof pa);
    assert_memory_equal(a.secret + 32, pa.bytes, sizeof pa.bytes); /* libsodium: seed || public key */
    char name[KEY_NAME_MAX];
    keys_agent_name(name, 3);
    assert_string_equal(name, "agent-3");
    keys_agent_name(name, 4294967295u);
    assert_string_equal(name, "agent-4294967295");
}

static void key_path(char *out, size_t cap, const char *name, const char *ext)
{
    snprintf(out, cap, "%s/%s.%s", dir, name, ext);
}

static void write_text(const char *name, const char *ext, const char *text, mode_t mode)
{
    char path[128];
    key_path(path, sizeof path, name, ext);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0); /* whatever the umask */
}

#define TEXT_MAX 512

/* The file's text into out (TEXT_MAX bytes); returns out. */
static char *read_text(const char *name, const char *ext, char *out)
{
    char path[128];
    key_path(path, sizeof path, name, ext);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, TEXT_MAX - 1, f);
    fclose(f);
    out[n] = '\0';
    return out;
}

static void test_key_files_round_trip(void **state)
{
    (void)state;
    esgd_error err = {0};
    assert_int_equal(keys_generate(dir, "coordinator", &err), ESGD_OK);
    char path[128];
    struct stat info;
    key_path(path, sizeof path, "coordinator", "key");
    assert_int_equal(stat(path, &info), 0);
    assert_int_equal(info.st_mode & 0777, 0600);
    char text[TEXT_MAX];
    assert_string_equal(strtok(read_text("coordinator", "key", text), " "), "esgd-ed25519-secret");
    assert_string_equal(strtok(read_text("coordinator", "pub", text), " "), "esgd-ed25519-public");

    signing_key secret;
    verify_key public_key;
    assert_int_equal(keys_load_secret(dir, "coordinator", &secret, &err), ESGD_OK);
    assert_int_equal(keys_load_public(dir, "coordinator", &public_key, &err), ESGD_OK);
    assert_memory_equal(secret.secret + 32, public_key.bytes, sizeof public_key.bytes);
    /* What the loaded secret signs, the loaded public key opens; a fresh pair differs. */
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 256, NULL), ESGD_OK);
    signed_message(&buf, 100, &secret);
    size_t body = 0;
    assert_int_equal(envelope_open(buf.data, buf.size, &public_key, &body, &err), ESGD_OK);
    assert_int_equal(keys_generate(dir, "agent-3", &err), ESGD_OK);
    verify_key agent3;
    assert_int_equal(keys_load_public(dir, "agent-3", &agent3, &err), ESGD_OK);
    assert_memory_not_equal(&agent3, &public_key, sizeof agent3);
    assert_int_equal(envelope_open(buf.data, buf.size, &agent3, &body, &err), ESGD_ERR_SIGNATURE);
    buffer_destroy(&buf);

    /* An existing pair is never overwritten. */
    assert_int_equal(keys_generate(dir, "coordinator", &err), ESGD_ERR_IO);
    signing_key again;
    assert_int_equal(keys_load_secret(dir, "coordinator", &again, &err), ESGD_OK);
    assert_memory_equal(&again, &secret, sizeof again);
    /* Missing files and folders. */
    assert_int_equal(keys_load_secret(dir, "agent-9", &again, &err), ESGD_ERR_IO);
    assert_int_equal(keys_load_public(dir, "agent-9", &public_key, &err), ESGD_ERR_IO);
    assert_int_equal(keys_generate("/nonexistent-esgd-dir", "coordinator", &err), ESGD_ERR_IO);
    /* A folder where a key file should be. */
    key_path(path, sizeof path, "x", "pub");
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(keys_load_public(dir, "x", &public_key, &err), ESGD_ERR_IO);
    rmdir(path);
}

/* A secret key readable by anyone else is refused, even if it is valid. */
static void test_secret_key_file_must_be_private(void **state)
{
    (void)state;
    esgd_error err = {0};
    assert_int_equal(keys_generate(dir, "open", &err), ESGD_OK);
    char path[128];
    key_path(path, sizeof path, "open", "key");
    signing_key secret;
    static const mode_t modes[] = {0644, 0640, 0604, 0660, 0602, 0610};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        assert_int_equal(chmod(path, modes[i]), 0);
        memset(&err, 0, sizeof err);
        if (keys_load_secret(dir, "open", &secret, &err) != ESGD_ERR_ARG)
            fail_msg("mode %03o: %s", (unsigned)modes[i], err.message);
        assert_non_null(strstr(err.message, "chmod 600"));
    }
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(keys_load_secret(dir, "open", &secret, &err), ESGD_OK);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(keys_load_secret(dir, "open", &secret, &err), ESGD_OK);
    /* A public key may be read by anyone. */
    key_path(path, sizeof path, "open", "pub");
    assert_int_equal(chmod(path, 0644), 0);
    verify_key public_key;
    assert_int_equal(keys_load_public(dir, "open", &public_key, &err), ESGD_OK);
}

static void test_malformed_key_files(void **state)
{
    (void)state;
    esgd_error err = {0};
    assert_int_equal(keys_generate(dir, "other", &err), ESGD_OK);
    char good_secret[TEXT_MAX], good_public[TEXT_MAX];
    read_text("other", "key", good_secret);
    read_text("other", "pub", good_public);
    const char *secret_hex = good_secret + strlen("esgd-ed25519-secret ");
    const char *public_hex = good_public + strlen("esgd-ed25519-public ");
    char text[TEXT_MAX + 100];
    signing_key secret;
    verify_key public_key;

    /* As written, both load. */
    write_text("bad", "key", good_secret, 0600);
    write_text("bad", "pub", good_public, 0644);
    assert_int_equal(keys_load_secret(dir, "bad", &secret, &err), ESGD_OK);
    assert_int_equal(keys_load_public(dir, "bad", &public_key, &err), ESGD_OK);
    /* Without its final newline too. */
    snprintf(text, sizeof text, "esgd-ed25519-secret %.128s", secret_hex);
    write_text("bad", "key", text, 0600);
    assert_int_equal(keys_load_secret(dir, "bad", &secret, &err), ESGD_OK);

    const char *bad_secrets[] = {
        "",                                          /* empty */
        "\n",
        "esgd-ed25519-secret \n",                    /* no digits */
        "esgd-ed25519-secret",
        NULL, NULL, NULL, NULL, NULL, NULL, NULL,    /* built below */
    };
    char built[7][TEXT_MAX + 100];
    snprintf(built[0], sizeof built[0], "esgd-ed25519-public %.128s\n", secret_hex);  /* the wrong kind */
    snprintf(built[1], sizeof built[1], "esgd-ed25519-secret %.127s\n", secret_hex);  /* a digit short */
    snprintf(built[2], sizeof built[2], "esgd-ed25519-secret %.128s0\n", secret_hex); /* a digit more */
    snprintf(built[3], sizeof built[3], "esgd-ed25519-secret %.128s", secret_hex);
    built[3][20 + 17] = 'g';                                                          /* not hex */
    snprintf(built[4], sizeof built[4], "esgd-ed25519-secret  %.128s\n", secret_hex); /* two spaces */
    snprintf(built[5], sizeof built[5], "esgd-ed25519-secret %.128s\n\n", secret_hex); /* a second line */
    snprintf(built[6], sizeof built[6], "%s", public_hex);                            /* digits alone */
    for (int i = 0; i < 7; i++)
        bad_secrets[4 + i] = built[i];
    for (size_t i = 0; i < sizeof bad_secrets / sizeof bad_secrets[0]; i++) {
        write_text("bad", "key", bad_secrets[i], 0600);
        memset(&err, 0, sizeof err);
        if (keys_load_secret(dir, "bad", &secret, &err) != ESGD_ERR_FORMAT)
            fail_msg("secret file %zu '%s': %s (%s)", i, bad_secrets[i], esgd_status_name(err.status), err.message);
    }

    char pub_built[5][TEXT_MAX + 100];
    snprintf(pub_built[0], sizeof pub_built[0], "esgd-ed25519-secret %.64s\n", public_hex); /* the wrong kind */
    snprintf(pub_built[1], sizeof pub_built[1], "esgd-ed25519-public %.63s\n", public_hex);
    snprintf(pub_built[2], sizeof pub_built[2], "esgd-ed25519-public %.64s00\n", public_hex);
    snprintf(pub_built[3], sizeof pub_built[3], "esgd-ed25519-public %.64s", public_hex);
    pub_built[3][20] = 'Z';
    snprintf(pub_built[4], sizeof pub_built[4], "%s", good_secret); /* a secret file as the public one */
    const char *bad_publics[] = {"", "esgd-ed25519-public\n", pub_built[0], pub_built[1], pub_built[2], pub_built[3],
                                 pub_built[4]};
    for (size_t i = 0; i < sizeof bad_publics / sizeof bad_publics[0]; i++) {
        write_text("bad", "pub", bad_publics[i], 0644);
        memset(&err, 0, sizeof err);
        if (keys_load_public(dir, "bad", &public_key, &err) != ESGD_ERR_FORMAT)
            fail_msg("public file %zu '%s': %s (%s)", i, bad_publics[i], esgd_status_name(err.status), err.message);
    }
    /* A file longer than any key line. */
    memset(text, 'a', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    write_text("bad", "pub", text, 0644);
    assert_int_equal(keys_load_public(dir, "bad", &public_key, &err), ESGD_ERR_FORMAT);
}

/* A .key file is seed || public key: a public half that is not the seed's
 * (another key's, or edited) is refused. */
static void test_public_half_must_match(void **state)
{
    (void)state;
    esgd_error err = {0};
    assert_int_equal(keys_generate(dir, "swapped", &err), ESGD_OK);
    char mine[TEXT_MAX], theirs[TEXT_MAX];
    read_text("swapped", "key", mine);
    assert_int_equal(keys_generate(dir, "group", &err), ESGD_OK);
    read_text("group", "key", theirs);
    const size_t tag = strlen("esgd-ed25519-secret ");
    char text[TEXT_MAX + 100];
    /* my seed, their public half */
    snprintf(text, sizeof text, "%.*s%.64s\n", (int)(tag + 64), mine, theirs + tag + 64);
    write_text("swapped", "key", text, 0600);
    signing_key secret;
    memset(&err, 0, sizeof err);
    assert_int_equal(keys_load_secret(dir, "swapped", &secret, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "public half"));
    /* one digit of the public half changed */
    snprintf(text, sizeof text, "%s", mine);
    text[tag + 64 + 10] = text[tag + 64 + 10] == '0' ? '1' : '0';
    write_text("swapped", "key", text, 0600);
    assert_int_equal(keys_load_secret(dir, "swapped", &secret, &err), ESGD_ERR_FORMAT);
    /* one digit of the seed changed: the stored public half no longer matches */
    snprintf(text, sizeof text, "%s", mine);
    text[tag + 5] = text[tag + 5] == '0' ? '1' : '0';
    write_text("swapped", "key", text, 0600);
    assert_int_equal(keys_load_secret(dir, "swapped", &secret, &err), ESGD_ERR_FORMAT);
    /* the file as it was loads */
    write_text("swapped", "key", mine, 0600);
    assert_int_equal(keys_load_secret(dir, "swapped", &secret, &err), ESGD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_and_open_round_trip),
        cmocka_unit_test(test_wrong_key_is_refused),
        cmocka_unit_test(test_every_flipped_bit_is_refused),
        cmocka_unit_test(test_short_messages_are_refused),
        cmocka_unit_test(test_derived_keys),
        cmocka_unit_test_setup_teardown(test_key_files_round_trip, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_secret_key_file_must_be_private, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_malformed_key_files, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_public_half_must_match, make_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, setup_sodium, NULL);
}
