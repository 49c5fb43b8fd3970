/* testcert.c — generates a fresh self-signed P-256 certificate and key for
 * tests, with the OpenSSL 3 API (EVP_EC_gen, X509_sign), so no test depends on
 * a checked-in key or on the openssl command line. Nothing is cached: each
 * call makes a new key. */
#include "testcert.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <unistd.h>

static int fail(char *err, size_t err_size, const char *step) {
  unsigned long e = ERR_get_error();
  char why[256] = "no OpenSSL error";
  if (e) ERR_error_string_n(e, why, sizeof why);
  ERR_clear_error();
  if (err && err_size) snprintf(err, err_size, "testcert: %s: %s", step, why);
  return -1;
}

static int add_ext(X509 *x, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ext) return -1;
  int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? 0 : -1;
}

int hubu_testcert_write(const char *cert_path, const char *key_path, int days, char *err, size_t err_size) {
  int rc = -1;
  EVP_PKEY *key = NULL;
  X509 *x = NULL;
  BIGNUM *serial = NULL;
  FILE *kf = NULL, *cf = NULL;

  key = EVP_EC_gen("P-256");
  if (!key) {
    fail(err, err_size, "EVP_EC_gen");
    goto out;
  }

  x = X509_new();
  serial = BN_new();
  if (!x || !serial) {
    fail(err, err_size, "X509_new");
    goto out;
  }
  if (X509_set_version(x, X509_VERSION_3) != 1 || !BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
      !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) || !X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
      !X509_time_adj_ex(X509_getm_notAfter(x), days > 0 ? days : 1, 0, NULL) || X509_set_pubkey(x, key) != 1) {
    fail(err, err_size, "certificate fields");
    goto out;
  }
  X509_NAME *name = X509_get_subject_name(x);
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"HubuIM tests", -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0) != 1 ||
      X509_set_issuer_name(x, name) != 1) {
    fail(err, err_size, "certificate name");
    goto out;
  }
  /* What `openssl req -x509` puts in by default, plus the names a test connects to. */
  if (add_ext(x, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
      add_ext(x, NID_subject_key_identifier, "hash") != 0 ||
      add_ext(x, NID_authority_key_identifier, "keyid:always") != 0 ||
      add_ext(x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1") != 0) {
    fail(err, err_size, "certificate extensions");
    goto out;
  }
  if (X509_sign(x, key, EVP_sha256()) <= 0) {
    fail(err, err_size, "X509_sign");
    goto out;
  }

  int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || !(kf = fdopen(fd, "w"))) {
    if (fd >= 0) close(fd);
    if (err && err_size) snprintf(err, err_size, "testcert: cannot write %s", key_path);
    goto out;
  }
  if (PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL) != 1) {
    fail(err, err_size, "write key");
    goto out;
  }
  if (!(cf = fopen(cert_path, "w"))) {
    if (err && err_size) snprintf(err, err_size, "testcert: cannot write %s", cert_path);
    goto out;
  }
  if (PEM_write_X509(cf, x) != 1) {
    fail(err, err_size, "write certificate");
    goto out;
  }
  rc = 0;

out:
  if (cf && fclose(cf) != 0 && rc == 0) {
    rc = -1;
    if (err && err_size) snprintf(err, err_size, "testcert: cannot close %s", cert_path);
  }
  if (kf && fclose(kf) != 0 && rc == 0) {
    rc = -1;
    if (err && err_size) snprintf(err, err_size, "testcert: cannot close %s", key_path);
  }
  BN_free(serial);
  X509_free(x);
  EVP_PKEY_free(key);
  return rc;
}
