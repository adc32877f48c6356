/**
 * @module
 * Test helper: a throwaway certificate authority and a server certificate it signed, for HTTPS tests on
 * 127.0.0.1 (names: `media.test` and the address 127.0.0.1; valid 2024 to 2124). Not a secret: never trust it
 * outside tests.
 */

/** The test CA's certificate, PEM: pass it as `caCerts` to trust the server below. */
export const TEST_CA_CERT = `-----BEGIN CERTIFICATE-----
MIIBYjCCAQegAwIBAgIBATAKBggqhkjOPQQDAjAXMRUwEwYDVQQDDAx2bXAzIHRl
c3QgQ0EwIBcNMjQwMTAxMDAwMDAwWhgPMjEyNDAxMDEwMDAwMDBaMBcxFTATBgNV
BAMMDHZtcDMgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABIeylm4v
mZJ/P1OZaJFzlLPdWZ1higccmUgSHKZEmvC+R+CSdeRRrUrstwc3A3B5WpwY0mzz
NO8yxdLb4fVfeb2jQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgIE
MB0GA1UdDgQWBBQrwdiqvhVA6LUsaMs24lEi/WYrlTAKBggqhkjOPQQDAgNJADBG
AiEAvxiaV3Nzk15+xZi4hLeLmlfqRParHGveUTb2xCwIfKMCIQDnoyCMjiYPlHLp
AKcZxP7CUKVdABmt2Mhj579cyhjh2g==
-----END CERTIFICATE-----`;

/** A server certificate for `media.test` and 127.0.0.1, signed by the test CA, PEM. */
export const TEST_SERVER_CERT = `-----BEGIN CERTIFICATE-----
MIIBsTCCAVegAwIBAgIBAjAKBggqhkjOPQQDAjAXMRUwEwYDVQQDDAx2bXAzIHRl
c3QgQ0EwIBcNMjQwMTAxMDAwMDAwWhgPMjEyNDAxMDEwMDAwMDBaMBUxEzARBgNV
BAMMCm1lZGlhLnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQEvHgHrNrc
A56FQxjDQ2fyAPeGOf/b/PcqwArJ74YcGycXgQRrupk3T/KFuHNkQuQvrjdCE+rw
bbgzuPI18Kq5o4GTMIGQMBsGA1UdEQQUMBKCCm1lZGlhLnRlc3SHBH8AAAEwDAYD
VR0TAQH/BAIwADATBgNVHSUEDDAKBggrBgEFBQcDATAOBgNVHQ8BAf8EBAMCB4Aw
HQYDVR0OBBYEFLa2AQxj/VBgp+oFMB+SvWVQ72C1MB8GA1UdIwQYMBaAFCvB2Kq+
FUDotSxoyzbiUSL9ZiuVMAoGCCqGSM49BAMCA0gAMEUCIQDvVdvLij5pFbPRRzsu
aIdAnDy1g21qXpBKyZUVgQGY5AIgEmEU/v+/FnVXmMOZsJUlaoUy3rFJX5sGHSnj
GDbS9s4=
-----END CERTIFICATE-----`;

/** The key of {@linkcode TEST_SERVER_CERT}, PEM (PKCS#8). */
export const TEST_SERVER_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPyPQMXSCGasKYyGB
oVoxUUAvbaSph4b8T9nA2q/EmmahRANCAAQEvHgHrNrcA56FQxjDQ2fyAPeGOf/b
/PcqwArJ74YcGycXgQRrupk3T/KFuHNkQuQvrjdCE+rwbbgzuPI18Kq5
-----END PRIVATE KEY-----`;
