/* fuzz_config.c — libFuzzer target for the configuration parser: arbitrary bytes as a
 * configuration file, then the dump of whatever was accepted, and the secret masks. Must
 * never crash, leak or read out of bounds; rejection is the expected outcome for most
 * inputs. */
#include <stdio.h>

#include "config.h"
#include "text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static FILE *devnull;
        char err[512], *s;
        Config *c = NULL;
        usec_t d;
        uint64_t n;

        /* No secrets from the environment: the parser alone is under test. */
        unsetenv("CREDENTIALS_DIRECTORY");
        if (!devnull)
                devnull = fopen("/dev/null", "w");

        if (config_load_buffer("fuzz.conf", (const char *) data, size, &c, err, sizeof err) == 0) {
                if (devnull)
                        config_dump(c, devnull);
                config_free(c);
        }

        /* The scalar parsers and the secret masks on the same bytes as a string: the
         * masked text never contains more than the input's bytes plus the masks. */
        s = strndup((const char *) data, size < 4096 ? size : 4096);
        if (s) {
                char *m;

                (void) text_parse_duration(s, &d);
                (void) text_parse_size(s, &n);
                m = config_mask_conninfo(s);
                if (m && strlen(m) > 8 * strlen(s))
                        abort();
                free(m);
                m = config_mask_uri(s);
                if (m && strlen(m) > 8 * strlen(s))
                        abort();
                free(m);
                free(s);
        }
        return 0;
}
