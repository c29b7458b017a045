/* tlsid.c — the hello's proof of an agent's certificate, with mbed TLS; see tlsid.h. */
#include "pw/tlsid.h"

#include "pw/error.h"
#include "pw/util.h"

#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pw_tlsid {
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    char cert_pem[PW_TLSID_CERT_MAX];
};

struct pw_tlsca {
    mbedtls_x509_crt chain;
};

static void errf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

static void mbed_err(int rv, char *buf, size_t n)
{
    mbedtls_strerror(rv, buf, n);
}

/* statement_hash is SHA-256 of "prewarm-hello\n<agent>\n<boot>\n<ts>". */
static int statement_hash(const char *agent_id, const char *boot_id, int64_t ts_ms, unsigned char out[32])
{
    char st[256];
    int n = snprintf(st, sizeof(st), "prewarm-hello\n%s\n%s\n%" PRId64, agent_id, boot_id, ts_ms);
    if (n < 0 || (size_t)n >= sizeof(st))
        return -1;
    return mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), (const unsigned char *)st, (size_t)n, out);
}

/* first_cert_pem copies the first CERTIFICATE block of text into out. */
static int first_cert_pem(const char *text, char *out, size_t n)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----", end[] = "-----END CERTIFICATE-----";
    const char *b = strstr(text, begin);
    const char *e = b != NULL ? strstr(b, end) : NULL;
    if (e == NULL)
        return -1;
    size_t len = (size_t)(e - b) + sizeof(end) - 1;
    if (len + 2 > n)
        return -1;
    memcpy(out, b, len);
    out[len] = '\n';
    out[len + 1] = '\0';
    return 0;
}

int pw_tlsid_load(const char *path, struct pw_tlsid **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        errf(errbuf, errlen, "%s: cannot open it", path);
        return PW_ERR_IO;
    }
    char *text = pw_xcalloc(1, 65537);
    size_t n = fread(text, 1, 65536, f);
    fclose(f);
    text[n] = '\0';
    struct pw_tlsid *id = pw_xcalloc(1, sizeof(*id));
    mbedtls_pk_init(&id->key);
    mbedtls_entropy_init(&id->entropy);
    mbedtls_ctr_drbg_init(&id->drbg);
    int rv = PW_OK, m;
    char e[160];
    if (first_cert_pem(text, id->cert_pem, sizeof(id->cert_pem)) != 0) {
        errf(errbuf, errlen, "%s: no certificate (PEM, at most %d bytes) in it", path, PW_TLSID_CERT_MAX);
        rv = PW_ERR_PARSE;
    } else if ((m = mbedtls_pk_parse_key(&id->key, (const unsigned char *)text, n + 1, NULL, 0)) != 0) {
        mbed_err(m, e, sizeof(e));
        errf(errbuf, errlen, "%s: no usable unencrypted private key in it: %s", path, e);
        rv = PW_ERR_PARSE;
    } else if ((m = mbedtls_ctr_drbg_seed(&id->drbg, mbedtls_entropy_func, &id->entropy,
                                          (const unsigned char *)"prewarm-tlsid", 13)) != 0) {
        mbed_err(m, e, sizeof(e));
        errf(errbuf, errlen, "random generator: %s", e);
        rv = PW_ERR_INTERNAL;
    }
    /* The file held a private key: wipe the copy. */
    volatile char *v = text;
    for (size_t i = 0; i < n; i++)
        v[i] = 0;
    free(text);
    if (rv != PW_OK) {
        pw_tlsid_free(id);
        return rv;
    }
    /* The key must be the certificate's. */
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    if (mbedtls_x509_crt_parse(&crt, (const unsigned char *)id->cert_pem, strlen(id->cert_pem) + 1) != 0 ||
        mbedtls_pk_check_pair(&crt.pk, &id->key) != 0) {
        errf(errbuf, errlen, "%s: the private key does not belong to the certificate", path);
        rv = PW_ERR_INVAL;
    }
    mbedtls_x509_crt_free(&crt);
    if (rv != PW_OK) {
        pw_tlsid_free(id);
        return rv;
    }
    *out = id;
    return PW_OK;
}

void pw_tlsid_free(struct pw_tlsid *id)
{
    if (id == NULL)
        return;
    mbedtls_pk_free(&id->key);
    mbedtls_ctr_drbg_free(&id->drbg);
    mbedtls_entropy_free(&id->entropy);
    free(id);
}

const char *pw_tlsid_cert_pem(const struct pw_tlsid *id)
{
    return id->cert_pem;
}

int pw_tlsid_sign_hello(struct pw_tlsid *id, const char *agent_id, const char *boot_id, int64_t ts_ms,
                        char sig[PW_TLSID_SIG_MAX])
{
    unsigned char hash[32], raw[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t rawlen = 0, b64len = 0;
    if (statement_hash(agent_id, boot_id, ts_ms, hash) != 0 ||
        mbedtls_pk_sign(&id->key, MBEDTLS_MD_SHA256, hash, sizeof(hash), raw, &rawlen, mbedtls_ctr_drbg_random,
                        &id->drbg) != 0 ||
        mbedtls_base64_encode((unsigned char *)sig, PW_TLSID_SIG_MAX, &b64len, raw, rawlen) != 0)
        return PW_ERR_INTERNAL;
    return PW_OK;
}

int pw_tlsca_load(const char *path, struct pw_tlsca **out, char *errbuf, size_t errlen)
{
    struct pw_tlsca *ca = pw_xcalloc(1, sizeof(*ca));
    mbedtls_x509_crt_init(&ca->chain);
    int m = mbedtls_x509_crt_parse_file(&ca->chain, path);
    if (m != 0) {
        char e[160];
        mbed_err(m, e, sizeof(e));
        errf(errbuf, errlen, "%s: not a PEM file of CA certificates: %s", path, e);
        pw_tlsca_free(ca);
        *out = NULL;
        return PW_ERR_PARSE;
    }
    *out = ca;
    return PW_OK;
}

void pw_tlsca_free(struct pw_tlsca *ca)
{
    if (ca == NULL)
        return;
    mbedtls_x509_crt_free(&ca->chain);
    free(ca);
}

int pw_tlsca_verify_hello(const struct pw_tlsca *ca, const char *cert_pem, const char *sig, const char *agent_id,
                          const char *boot_id, int64_t ts_ms, int64_t now_ms, char *why, size_t whylen)
{
    if (cert_pem == NULL || cert_pem[0] == '\0' || sig == NULL || sig[0] == '\0') {
        errf(why, whylen, "the hello carries no certificate proof (agent without --tls-cert?)");
        return PW_ERR_PROTO;
    }
    if (ts_ms < now_ms - PW_TLSID_SKEW_MS || ts_ms > now_ms + PW_TLSID_SKEW_MS) {
        errf(why, whylen, "the hello's proof is dated %" PRId64 " ms from now (clocks more than 5 min apart?)",
             ts_ms - now_ms);
        return PW_ERR_PROTO;
    }
    mbedtls_x509_crt leaf;
    mbedtls_x509_crt_init(&leaf);
    int rv = PW_ERR_PROTO;
    uint32_t flags = 0;
    unsigned char raw[MBEDTLS_PK_SIGNATURE_MAX_SIZE], hash[32];
    size_t rawlen = 0;
    if (mbedtls_x509_crt_parse(&leaf, (const unsigned char *)cert_pem, strlen(cert_pem) + 1) != 0) {
        errf(why, whylen, "the hello's certificate does not parse");
    } else if (mbedtls_x509_crt_verify(&leaf, (mbedtls_x509_crt *)&ca->chain, NULL, NULL, &flags, NULL, NULL) != 0 &&
               (flags & ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH) != 0) {
        char info[200];
        mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
        for (char *p = info; *p; p++)
            if (*p == '\n')
                *p = ' ';
        errf(why, whylen, "the hello's certificate is not from the agents' CA:%s", info);
    } else if (mbedtls_x509_crt_verify(&leaf, (mbedtls_x509_crt *)&ca->chain, NULL, agent_id, &flags, NULL, NULL) !=
               0) {
        char cn[PW_NAME_MAX + 8] = "?";
        mbedtls_x509_dn_gets(cn, sizeof(cn), &leaf.subject);
        errf(why, whylen, "the certificate (%s) does not name agent %s", cn, agent_id);
    } else if (mbedtls_base64_decode(raw, sizeof(raw), &rawlen, (const unsigned char *)sig, strlen(sig)) != 0 ||
               statement_hash(agent_id, boot_id, ts_ms, hash) != 0 ||
               mbedtls_pk_verify(&leaf.pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), raw, rawlen) != 0) {
        errf(why, whylen, "the hello's signature does not match its certificate");
    } else {
        rv = PW_OK;
    }
    mbedtls_x509_crt_free(&leaf);
    return rv;
}
