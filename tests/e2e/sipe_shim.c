/* LD_PRELOAD shim for running SIPE (pidgin-sipe 1.25) under bitlbee in tests/e2e/test_sipe.py.
 *
 * 1. SIPE hands libxml2 a SAX handler marked SAX2 (initialized == XML_SAX2_MAGIC) that has
 *    only the SAX1 callbacks (startElement, no startElementNs). libxml2 2.9.14 then calls
 *    none of them, so SIPE silently sees empty XML documents (provisioning, every XCCOS
 *    reply). For exactly such a handler we pass on a copy marked plain SAX1 (initialized = 1);
 *    libpurple's own SAX2 handlers (with startElementNs) go through untouched.
 * 2. libpurple debug is reported as enabled, verbose and unsafe, so SIPE logs every SIP
 *    message it sends and receives: the trace the test asserts on.
 * 3. With SIPE_TEST_CA_DIR set, libpurple's CA search path is that directory alone (set at
 *    load, before libpurple fills in the system paths: /etc/ssl/certs on Debian). libpurple
 *    reads no environment for its trust store, and the test must not change the machine's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libxml/parser.h>
#include <stdlib.h>

typedef int (*sax_parse_memory)(xmlSAXHandlerPtr, void *, const char *, int);

int xmlSAXUserParseMemory(xmlSAXHandlerPtr sax, void *user_data, const char *buffer, int size)
{
    static sax_parse_memory real;
    xmlSAXHandler sax1;

    if (real == NULL)
        real = (sax_parse_memory)dlsym(RTLD_NEXT, "xmlSAXUserParseMemory");
    if (sax == NULL || sax->initialized != XML_SAX2_MAGIC || sax->startElementNs != NULL)
        return real(sax, user_data, buffer, size);
    sax1 = *sax;
    sax1.initialized = 1;
    return real(&sax1, user_data, buffer, size);
}

int purple_debug_is_enabled(void) { return 1; }
int purple_debug_is_verbose(void) { return 1; }
int purple_debug_is_unsafe(void) { return 1; }

typedef void (*add_ca_search_path)(const char *);

__attribute__((constructor)) static void private_ca_dir(void)
{
    const char *dir = getenv("SIPE_TEST_CA_DIR");
    add_ca_search_path add;

    if (dir == NULL || *dir == '\0')
        return;
    add = (add_ca_search_path)dlsym(RTLD_DEFAULT, "purple_certificate_add_ca_search_path");
    if (add != NULL)
        add(dir);
}
