/* tlsid.h — an agent's identity on the TLS agent link: proving, in its hello, that it holds
 * the private key of a certificate naming its agent id.
 *
 * The agent link runs over NNG's tls+tcp:// with mutual authentication, so only holders of a
 * certificate signed by the agents' CA can connect at all. NNG 1.5 does not expose the peer's
 * certificate on a pipe, so the link cannot read the name in it; instead the hello carries the
 * agent's certificate and a signature, made with the certificate's key, over the agent id, the
 * boot id and the time. The scheduler checks the certificate against the same CA, that its
 * common name (or a DNS name) is the agent id, the signature, and the time (±5 minutes), and
 * then binds that connection to the agent id: every later message on it must be that agent's.
 *
 * Threads: an identity or CA is used by one thread at a time; different objects are
 * independent. */
#ifndef PW_TLSID_H
#define PW_TLSID_H

#include <stddef.h>
#include <stdint.h>

#define PW_TLSID_CERT_MAX 4096 /* PEM of one certificate */
#define PW_TLSID_SIG_MAX 512   /* base64 of a signature */
#define PW_TLSID_SKEW_MS (5 * 60 * 1000)

struct pw_tlsid;
struct pw_tlsca;

/* pw_tlsid_load reads a PEM file holding a certificate and its (unencrypted) key, the same
 * file NNG is given for the connection. On PW_OK *out is the caller's (pw_tlsid_free). */
int pw_tlsid_load(const char *path, struct pw_tlsid **out, char *errbuf, size_t errlen);
void pw_tlsid_free(struct pw_tlsid *id);
/* pw_tlsid_cert_pem returns the certificate as PEM (owned by id). */
const char *pw_tlsid_cert_pem(const struct pw_tlsid *id);
/* pw_tlsid_sign_hello writes the base64 signature of the hello statement into sig. */
int pw_tlsid_sign_hello(struct pw_tlsid *id, const char *agent_id, const char *boot_id, int64_t ts_ms,
                        char sig[PW_TLSID_SIG_MAX]);

/* pw_tlsca_load reads a PEM file of CA certificates. On PW_OK *out is the caller's. */
int pw_tlsca_load(const char *path, struct pw_tlsca **out, char *errbuf, size_t errlen);
void pw_tlsca_free(struct pw_tlsca *ca);
/* pw_tlsca_verify_hello checks a hello's proof: cert_pem chains to ca and names agent_id, sig
 * is its key's signature of the statement, ts_ms is within PW_TLSID_SKEW_MS of now_ms. Returns
 * PW_OK, or PW_ERR_PROTO with a one-line reason in why. */
int pw_tlsca_verify_hello(const struct pw_tlsca *ca, const char *cert_pem, const char *sig, const char *agent_id,
                          const char *boot_id, int64_t ts_ms, int64_t now_ms, char *why, size_t whylen);

#endif
