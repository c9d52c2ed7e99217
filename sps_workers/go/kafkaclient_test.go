package main

// The cluster's client properties (kafkaclient.go): references resolved as
// crayfish/kafka_client.py resolves them, the checks naming the property, and the TLS / SASL
// translation for franz-go, with real TLS handshakes on 127.0.0.1 (no broker).

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPropertiesFileAndReferencesResolveAsInPython(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CRAYFISH_GO_TEST_PW", "s3cret")
	pw := write(t, dir, "key-pw", "k3y\n\n")
	file := write(t, dir, "client.properties", "# a comment\n! another\n\nsecurity.protocol = SASL_SSL\n"+
		"sasl.username: alice\nclient.rack=r1\nssl.key.password=${file:"+pw+"}\nlonely\n")
	k := kafkaClient{PropertiesFile: &file, Properties: map[string]string{
		"client.rack": "r2", "sasl.password": "${env:CRAYFISH_GO_TEST_PW}", "url": "a=b:c"}}
	got, err := k.resolved()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"security.protocol": "SASL_SSL", "sasl.username": "alice", "client.rack": "r2",
		"ssl.key.password": "k3y", "sasl.password": "s3cret", "lonely": "", "url": "a=b:c"}
	if len(got) != len(want) {
		t.Fatalf("resolved %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestMissingReferencesAreNamed(t *testing.T) {
	os.Unsetenv("CRAYFISH_GO_TEST_UNSET")
	for _, c := range []struct{ value, msg string }{
		{"${env:CRAYFISH_GO_TEST_UNSET}", "kafka_client: sasl.password: environment variable CRAYFISH_GO_TEST_UNSET is not set"},
		{"${file:/nonexistent/pw}", "kafka_client: sasl.password: cannot read /nonexistent/pw (no such file or directory)"},
	} {
		_, err := kafkaClient{Properties: map[string]string{"sasl.password": c.value}}.kafkaOptions()
		var ce *configError
		if !errors.As(err, &ce) || err.Error() != c.msg {
			t.Errorf("%s: got %v, want config error %q", c.value, err, c.msg)
		}
	}
	missing := "/nonexistent/client.properties"
	_, err := kafkaClient{PropertiesFile: &missing}.kafkaOptions()
	if err == nil || !strings.HasPrefix(err.Error(), "kafka_client: properties_file: cannot read /nonexistent") {
		t.Errorf("properties_file: got %v", err)
	}
}

func TestUnusablePropertiesAreNamed(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CRAYFISH_GO_TEST_PW", "x")
	ca := write(t, dir, "ca.pem", "CA\n")
	base := func(extra map[string]string) kafkaClient {
		p := map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
			"sasl.username": "alice", "sasl.password": "${env:CRAYFISH_GO_TEST_PW}", "ssl.ca.location": ca}
		for k, v := range extra {
			p[k] = v
		}
		return kafkaClient{Properties: p}
	}
	for _, c := range []struct {
		extra map[string]string
		msg   string
	}{
		{map[string]string{"security.protocol": "TLS"}, "security.protocol: 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"},
		{map[string]string{"sasl.mechanisms": "GSSAPI"}, "sasl.mechanisms: 'GSSAPI'; supported: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"},
		{map[string]string{"sasl.mechanisms": "OAUTHBEARER"}, "sasl.mechanisms: 'OAUTHBEARER'"},
		{map[string]string{"sasl.password": "hunter2"}, "sasl.password: a secret is never written in the experiment"},
		{map[string]string{"sasl.password": "x${env:CRAYFISH_GO_TEST_PW}"}, "sasl.password: a secret is never written"},
		{map[string]string{"sasl.jaas.config": "${env:CRAYFISH_GO_TEST_PW}"}, "sasl.jaas.config: a Java client name; give sasl.username"},
		{map[string]string{"ssl.ca.location": "/no/such/ca.pem"}, "ssl.ca.location: no file at /no/such/ca.pem"},
		{map[string]string{"ssl.certificate.location": ca}, "ssl.certificate.location and ssl.key.location: mutual TLS needs both"},
		{map[string]string{"sasl.username": ""}, "sasl.username and sasl.password are needed with SASL_SSL"},
		{nil, "ssl.ca.location: no PEM certificate in " + ca},
	} {
		_, err := base(c.extra).kafkaOptions()
		var ce *configError
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "kafka_client: "+c.msg) {
			t.Errorf("%v: got %v, want config error starting %q", c.extra, err, "kafka_client: "+c.msg)
		}
	}
}

func TestOptionsOfEachProtocolAndMechanism(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir, "localhost")
	t.Setenv("CRAYFISH_GO_TEST_PW", "pw")
	for _, c := range []struct {
		props    map[string]string
		opts     int
		security string
		mech     string
	}{
		{map[string]string{}, 0, "PLAINTEXT", ""},
		{map[string]string{"security.protocol": "ssl", "ssl.ca.location": pki.ca}, 1, "SSL", ""},
		{map[string]string{"security.protocol": "SSL", "ssl.ca.location": pki.ca, "ssl.certificate.location": pki.clientCert,
			"ssl.key.location": pki.clientKey}, 1, "SSL+client-cert", ""},
		{map[string]string{"security.protocol": "SASL_PLAINTEXT", "sasl.username": "u",
			"sasl.password": "${env:CRAYFISH_GO_TEST_PW}"}, 1, "SASL_PLAINTEXT/PLAIN", "PLAIN"},
		{map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanisms": "scram-sha-256", "sasl.username": "u",
			"sasl.password": "${env:CRAYFISH_GO_TEST_PW}"}, 2, "SASL_SSL/SCRAM-SHA-256", "SCRAM-SHA-256"},
		{map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "u",
			"sasl.password": "${env:CRAYFISH_GO_TEST_PW}", "ssl.ca.location": pki.ca}, 2, "SASL_SSL/SCRAM-SHA-512", "SCRAM-SHA-512"},
	} {
		c.props["client.rack"] = "r1"
		c.props["request.timeout.ms"] = "5000"
		setup, err := kafkaClient{Properties: c.props}.kafkaOptions()
		if err != nil {
			t.Fatalf("%v: %v", c.props, err)
		}
		if len(setup.opts) != c.opts || setup.security != c.security {
			t.Errorf("%v: %d options, security %q; want %d, %q", c.props, len(setup.opts), setup.security, c.opts, c.security)
		}
		if strings.Join(setup.ignored, ",") != "client.rack,request.timeout.ms" {
			t.Errorf("%v: ignored %v", c.props, setup.ignored)
		}
		if c.mech != "" {
			if got := securityOf(c.props).saslMechanism().Name(); got != c.mech {
				t.Errorf("mechanism %q, want %q", got, c.mech)
			}
		}
	}
}

func TestSettingsCarryTheClientProperties(t *testing.T) {
	t.Setenv("CRAYFISH_GO_TEST_PW", "pw")
	s, err := parseSettings([]byte(`{"bootstrap":"h:1","input_topic":"i","output_topic":"o","dead_letter_topic":"d",
		"consumer_group":"g","model":"ffnn","kafka_client":{"properties":{"security.protocol":"SASL_PLAINTEXT",
		"sasl.mechanisms":"SCRAM-SHA-512","sasl.username":"u","sasl.password":"${env:CRAYFISH_GO_TEST_PW}"},
		"properties_file":null},"start_offsets":{"0":5}}`))
	if err != nil || s.kafka.security != "SASL_PLAINTEXT/SCRAM-SHA-512" || len(s.kafka.opts) != 1 {
		t.Fatalf("got %v, %+v", err, s)
	}
	_, err = parseSettings([]byte(`{"bootstrap":"h:1","input_topic":"i","output_topic":"o","dead_letter_topic":"d",
		"consumer_group":"g","model":"ffnn","kafka_client":{"properties":{"security.protocol":"SASL_SSL",
		"sasl.mechanisms":"GSSAPI","sasl.username":"u","sasl.password":"${env:CRAYFISH_GO_TEST_PW}"}}}`))
	var ce *configError
	if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "kafka_client: sasl.mechanisms: 'GSSAPI'") {
		t.Fatalf("got %v", err)
	}
}

func TestHostNameVerificationAndMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir, "broker.test") // the server's certificate names broker.test, we dial 127.0.0.1
	other := newPKI(t, t.TempDir(), "broker.test")
	for _, c := range []struct {
		name  string
		props map[string]string
		ok    bool
	}{
		{"host name checked", map[string]string{"ssl.ca.location": pki.ca}, false},
		{"host name not checked", map[string]string{"ssl.ca.location": pki.ca, "ssl.endpoint.identification.algorithm": "none"}, true},
		{"chain still checked", map[string]string{"ssl.ca.location": other.ca, "ssl.endpoint.identification.algorithm": "none"}, false},
		{"no client certificate", map[string]string{"ssl.ca.location": pki.ca, "ssl.endpoint.identification.algorithm": "none"}, false},
	} {
		requireClientCert := c.name == "no client certificate"
		c.props["security.protocol"] = "SSL"
		err := handshake(t, pki, c.props, requireClientCert)
		if (err == nil) != c.ok {
			t.Errorf("%s: handshake error %v, want ok=%v", c.name, err, c.ok)
		}
	}
	mtls := map[string]string{"security.protocol": "SSL", "ssl.ca.location": pki.ca,
		"ssl.endpoint.identification.algorithm": "none",
		"ssl.certificate.location":              pki.clientCert, "ssl.key.location": pki.clientKey}
	if err := handshake(t, pki, mtls, true); err != nil {
		t.Errorf("mutual TLS: %v", err)
	}
}

// One P-256 key, unencrypted and as `openssl pkcs8 -topk8 -passout pass:k3y` writes it with
// OpenSSL 3's default (PBKDF2-HMAC-SHA256, AES-256-CBC), -v2 des3 -v2prf hmacWithSHA1 and
// -v2 aes-128-cbc -v2prf hmacWithSHA512.
const (
	ecPlain = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdQ4QCakJ8bMchJ6o
kBhNUmAVrPcMkQHhOTYHLn8BUc2hRANCAAQJpuvi7OUQSNTF97F7NZwr29TuIYn7
tiSFFlcpJUNkaD8Yk5+p/3sy36ivkGZ7JbEGICgo9rX9aqsgMk4e5rmy
-----END PRIVATE KEY-----
`
	ecAES256 = `-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhHN+7s2ig8EwICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEJnUC8PDJPK2FVu/Kltb8p0EgZC5
SlJJVumb0EUmYwpGgC/E43F1yhn7Y1124rgbKuoduaaWMA/n3/pA2vPgfhWOUi76
JGoUOt7PIzlSmN96IlaQTzfBVr2f00PyL7HzoEedPIpBHEIBpZTQLAViEeJ+4iay
qul3yxcchwFOxGROCCBi+hEriA449Md0ukk755avABtZbabO6DQtK78Nkvo53oU=
-----END ENCRYPTED PRIVATE KEY-----
`
	ecDES3 = `-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHVMEAGCSqGSIb3DQEFDTAzMBsGCSqGSIb3DQEFDDAOBAiWfCSnrju97AICCAAw
FAYIKoZIhvcNAwcECD3vjBcqEpdWBIGQckA6sdq6QGq/gKbkg3lHbpehcUNjzvNE
fwOyH97LNmjcTQMwTaq/eGJ9RMignnq284z0JiFIiyi9jYbAV1HEsNkjBBPGPML+
w/WO6saJCpYGsbH1xma+dfTQwhxpLwgGSEpjbHRYcmBgyPo8SAmqYYmqSdzrB/VM
5hUXVVBBCHlpO53+9vDCIpjInwCDlWjT
-----END ENCRYPTED PRIVATE KEY-----
`
	ecAES128 = `-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhrNBg40PqqtQICCAAw
DAYIKoZIhvcNAgsFADAdBglghkgBZQMEAQIEEEXa1PFAdSZKR8I4pZjn4UkEgZDg
QdArzLVxE3/RFtyFhk/3YAIG13B2h9xTK0diGjDiDjGYx+FtNiv6ar+VMKsZnqfh
K6QwcXbbhvY6xUTsQ5ifGxbJZT3PWmNHcYM9MZBbXu26qjGtEqFTT8EnF6MYF1iv
CUGM0n0JcDhc117Jlfu/cRN7/SiVRDNynFoqX44oPZy6S3qHS0JVW7WyX3+C5Ao=
-----END ENCRYPTED PRIVATE KEY-----
`
)

func TestEncryptedPKCS8KeysAsOpenSSLWritesThem(t *testing.T) {
	plain, _ := pem.Decode([]byte(ecPlain))
	for name, enc := range map[string]string{"aes256/sha256": ecAES256, "des3/sha1": ecDES3, "aes128/sha512": ecAES128} {
		block, _ := pem.Decode([]byte(enc))
		der, err := decryptPKCS8(block.Bytes, "k3y")
		if err != nil || !bytes.Equal(der, plain.Bytes) {
			t.Errorf("%s: %v (equal: %v)", name, err, bytes.Equal(der, plain.Bytes))
		}
		if _, err := decryptPKCS8(block.Bytes, "wrong"); err == nil {
			t.Errorf("%s: a wrong password decrypted", name)
		}
	}
}

func TestEncryptedKeys(t *testing.T) {
	dir := t.TempDir()
	// A certificate for the fixed key (self-signed: X509KeyPair only matches key and certificate).
	plain, _ := pem.Decode([]byte(ecPlain))
	key, err := x509.ParsePKCS8PrivateKey(plain.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.(*ecdsa.PrivateKey).PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := write(t, dir, "client.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})))
	sec1, _ := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	//lint:ignore SA1019 the legacy PEM encryption the worker reads
	enc, err := x509.EncryptPEMBlock(rand.Reader, "EC PRIVATE KEY", sec1, []byte("k3y"), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	legacy := write(t, dir, "legacy.key", string(pem.EncodeToMemory(enc)))
	pkcs8 := write(t, dir, "pkcs8.key", ecAES256)
	ca := write(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})))
	t.Setenv("CRAYFISH_GO_TEST_KEYPW", "k3y")
	t.Setenv("CRAYFISH_GO_TEST_BADPW", "nope")
	for _, c := range []struct {
		key, password, msg string
	}{
		{legacy, "${env:CRAYFISH_GO_TEST_KEYPW}", ""},
		{pkcs8, "${env:CRAYFISH_GO_TEST_KEYPW}", ""},
		{legacy, "", "kafka_client: ssl.key.location: " + legacy + " is encrypted; give ssl.key.password"},
		{pkcs8, "", "kafka_client: ssl.key.location: " + pkcs8 + " is encrypted; give ssl.key.password"},
		{pkcs8, "${env:CRAYFISH_GO_TEST_BADPW}", "kafka_client: ssl.key.password: cannot decrypt " + pkcs8},
		{cert, "", "kafka_client: ssl.certificate.location and ssl.key.location: cannot load"},
	} {
		props := map[string]string{"security.protocol": "SSL", "ssl.ca.location": ca,
			"ssl.certificate.location": cert, "ssl.key.location": c.key}
		if c.password != "" {
			props["ssl.key.password"] = c.password
		}
		_, err := kafkaClient{Properties: props}.kafkaOptions()
		if c.msg == "" && err != nil || c.msg != "" && (err == nil || !strings.HasPrefix(err.Error(), c.msg)) {
			t.Errorf("%s (password %q): got %v, want %q", filepath.Base(c.key), c.password, err, c.msg)
		}
	}
}

// handshake: a TLS server on 127.0.0.1 with pki's server certificate; the client configured from
// props dials it as franz-go does (ServerName = the host dialed).
func handshake(t *testing.T, pki testPKI, props map[string]string, requireClientCert bool) error {
	t.Helper()
	serverCert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	scfg := &tls.Config{Certificates: []tls.Certificate{serverCert}}
	if requireClientCert {
		pool := x509.NewCertPool()
		raw, _ := os.ReadFile(pki.ca)
		pool.AppendCertsFromPEM(raw)
		scfg.ClientAuth, scfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			conn.(*tls.Conn).Handshake()
			conn.Write([]byte{1})
			conn.Close()
		}
	}()
	setup, err := kafkaClient{Properties: props}.kafkaOptions()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := securityOf(props).tlsConfig()
	if err != nil || len(setup.opts) != 1 {
		t.Fatalf("tls config: %v (%d options)", err, len(setup.opts))
	}
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	// TLS 1.3: a refused client certificate shows on the first read.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	return err
}

type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

// newPKI: a CA, a server certificate for dnsName, a client certificate, as PEM files in dir.
func newPKI(t *testing.T, dir, dnsName string) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return write(t, dir, name+".crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
			write(t, dir, name+".key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	}
	p := testPKI{ca: write(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))}
	p.serverCert, p.serverKey = leaf(dnsName, 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}
