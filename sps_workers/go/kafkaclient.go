package main

// The cluster's Kafka client properties (WorkerSettings.kafka_client, crayfish/kafka_client.py)
// for franz-go: librdkafka property names, secrets as ${env:NAME} / ${file:PATH} references that
// this process resolves itself (the settings JSON holds only the references), an optional Java
// .properties file read here too. The security properties become franz-go options (TLS with a CA,
// mutual TLS, hostname verification; SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512); anything that
// cannot work is a config error naming the property, as the Python side says it. Other librdkafka
// properties have no generic franz-go equivalent: they are ignored and listed in one warning line.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// kafkaClient is KafkaClient: properties (references for secrets) and a properties file.
type kafkaClient struct {
	Properties     map[string]string `json:"properties"`
	PropertiesFile *string           `json:"properties_file"`
}

var (
	referenceRe  = regexp.MustCompile(`\$\{(env|file):([^}]+)\}`)
	separatorRe  = regexp.MustCompile(`\s*[=:]\s*`)
	kafkaProtos  = []string{"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
	saslMechs    = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
	translatedKP = map[string]bool{"security.protocol": true, "sasl.mechanisms": true, "sasl.mechanism": true,
		"sasl.username": true, "sasl.password": true, "ssl.ca.location": true, "ssl.certificate.location": true,
		"ssl.key.location": true, "ssl.key.password": true, "ssl.endpoint.identification.algorithm": true}
	// Java client names: given here they would fail every librdkafka client (crayfish/kafka_client.py JAVA_ONLY).
	javaOnly = map[string]string{
		"sasl.mechanism":          "sasl.mechanisms",
		"sasl.jaas.config":        "sasl.username and sasl.password (the Java clients get their JAAS line from them)",
		"ssl.truststore.location": "ssl.ca.location (a PEM file)",
		"ssl.truststore.type":     "ssl.ca.location (a PEM file)",
		"ssl.keystore.type":       "ssl.certificate.location and ssl.key.location (PEM files)",
	}
)

// isSecret: whether a property holds a secret (its value must be a reference), as is_secret.
func isSecret(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"password", "secret", "jaas", "token", "credential"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return strings.HasSuffix(n, ".pem")
}

func expandUser(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

func ioReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// resolveValue replaces the ${env:NAME} / ${file:PATH} references of one property's value
// (a file's whole content, trailing newlines dropped).
func resolveValue(name, value string) (string, error) {
	var failed error
	out := referenceRe.ReplaceAllStringFunc(value, func(m string) string {
		g := referenceRe.FindStringSubmatch(m)
		kind, ref := g[1], strings.TrimSpace(g[2])
		if kind == "env" {
			v, ok := os.LookupEnv(ref)
			if !ok && failed == nil {
				failed = configErrorf("kafka_client: %s: environment variable %s is not set", name, ref)
			}
			return v
		}
		b, err := os.ReadFile(expandUser(ref))
		if err != nil && failed == nil {
			failed = configErrorf("kafka_client: %s: cannot read %s (%s)", name, ref, ioReason(err))
		}
		return strings.TrimRight(string(b), "\n")
	})
	return out, failed
}

// readPropertiesFile reads a Java .properties file as read_properties_file does: key=value or
// key: value lines, # and ! comments.
func readPropertiesFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(expandUser(path))
	if err != nil {
		return nil, configErrorf("kafka_client: properties_file: cannot read %s (%s)", path, ioReason(err))
	}
	props := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		key, value := line, ""
		if loc := separatorRe.FindStringIndex(line); loc != nil {
			key, value = line[:loc[0]], line[loc[1]:]
		}
		props[strings.TrimSpace(key)] = strings.TrimSpace(value)
	}
	return props, nil
}

// resolved: the file's properties, the given ones over them, every reference resolved.
func (k kafkaClient) resolved() (map[string]string, error) {
	merged := map[string]string{}
	if k.PropertiesFile != nil && *k.PropertiesFile != "" {
		fromFile, err := readPropertiesFile(*k.PropertiesFile)
		if err != nil {
			return nil, err
		}
		merged = fromFile
	}
	for name, v := range k.Properties {
		merged[name] = v
	}
	out := make(map[string]string, len(merged))
	for _, name := range sortedKeys(merged) {
		v, err := resolveValue(name, merged[name])
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

// security holds the security facts of resolved properties (Security of crayfish/kafka_client.py).
type security struct {
	protocol, mechanism, username, password string
	caFile, certFile, keyFile, keyPassword  string
	verifyHostname                          bool
}

func securityOf(p map[string]string) security {
	mech := p["sasl.mechanisms"]
	if mech == "" {
		mech = p["sasl.mechanism"]
	}
	if mech == "" {
		mech = "PLAIN"
	}
	proto := p["security.protocol"]
	if proto == "" {
		proto = "PLAINTEXT"
	}
	algo, ok := p["ssl.endpoint.identification.algorithm"]
	if !ok {
		algo = "https"
	}
	return security{protocol: strings.ToUpper(proto), mechanism: strings.ToUpper(mech),
		username: p["sasl.username"], password: p["sasl.password"], caFile: p["ssl.ca.location"],
		certFile: p["ssl.certificate.location"], keyFile: p["ssl.key.location"], keyPassword: p["ssl.key.password"],
		verifyHostname: strings.ToLower(algo) != "none"}
}

func (s security) tls() bool  { return s.protocol == "SSL" || s.protocol == "SASL_SSL" }
func (s security) sasl() bool { return s.protocol == "SASL_PLAINTEXT" || s.protocol == "SASL_SSL" }

// check refuses what cannot work, naming the property (KafkaClient.check).
func (k kafkaClient) check(props map[string]string) error {
	for _, name := range sortedKeys(k.Properties) {
		v := strings.TrimSpace(k.Properties[name])
		if loc := referenceRe.FindStringIndex(v); isSecret(name) && (loc == nil || loc[0] != 0 || loc[1] != len(v)) {
			return configErrorf("kafka_client: %s: a secret is never written in the experiment; give "+
				"${env:NAME} (an environment variable) or ${file:PATH} (a file)", name)
		}
	}
	for _, name := range sortedKeys(props) {
		if instead, ok := javaOnly[name]; ok {
			return configErrorf("kafka_client: %s: a Java client name; give %s", name, instead)
		}
	}
	sec := securityOf(props)
	if !contains(kafkaProtos, sec.protocol) {
		return configErrorf("kafka_client: security.protocol: %s is not one of %s", pyRepr(sec.protocol),
			strings.Join(kafkaProtos, ", "))
	}
	if sec.sasl() {
		if !contains(saslMechs, sec.mechanism) {
			return configErrorf("kafka_client: sasl.mechanisms: %s; supported: %s", pyRepr(sec.mechanism),
				strings.Join(saslMechs, ", "))
		}
		if sec.username == "" || sec.password == "" {
			return configErrorf("kafka_client: sasl.username and sasl.password are needed with %s", sec.protocol)
		}
	}
	for _, name := range []string{"ssl.ca.location", "ssl.certificate.location", "ssl.key.location"} {
		if p, ok := props[name]; ok {
			if st, err := os.Stat(expandUser(p)); err != nil || !st.Mode().IsRegular() {
				return configErrorf("kafka_client: %s: no file at %s", name, p)
			}
		}
	}
	if (sec.certFile == "") != (sec.keyFile == "") {
		return configErrorf("kafka_client: ssl.certificate.location and ssl.key.location: mutual TLS needs both")
	}
	return nil
}

// tlsConfig: trust ssl.ca.location (system roots without it), present the client certificate
// (mutual TLS), verify the broker's host name unless ssl.endpoint.identification.algorithm=none
// (the chain is verified either way, as librdkafka does).
func (s security) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.caFile != "" {
		b, err := os.ReadFile(expandUser(s.caFile))
		if err != nil {
			return nil, configErrorf("kafka_client: ssl.ca.location: cannot read %s (%s)", s.caFile, ioReason(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, configErrorf("kafka_client: ssl.ca.location: no PEM certificate in %s", s.caFile)
		}
		cfg.RootCAs = pool
	}
	if s.certFile != "" {
		cert, err := s.clientCertificate()
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if !s.verifyHostname {
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true // Go's own check includes the host name: the chain is checked below
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the broker presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return cfg, nil
}

// clientCertificate loads ssl.certificate.location + ssl.key.location; an encrypted key (PKCS#8
// "ENCRYPTED PRIVATE KEY", pkcs8.go, or the legacy PEM way, Proc-Type/DEK-Info) is decrypted with
// ssl.key.password.
func (s security) clientCertificate() (tls.Certificate, error) {
	certPEM, err := os.ReadFile(expandUser(s.certFile))
	if err != nil {
		return tls.Certificate{}, configErrorf("kafka_client: ssl.certificate.location: cannot read %s (%s)",
			s.certFile, ioReason(err))
	}
	keyPEM, err := os.ReadFile(expandUser(s.keyFile))
	if err != nil {
		return tls.Certificate{}, configErrorf("kafka_client: ssl.key.location: cannot read %s (%s)", s.keyFile,
			ioReason(err))
	}
	for rest := keyPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		pkcs8 := block.Type == "ENCRYPTED PRIVATE KEY"
		legacy := x509.IsEncryptedPEMBlock(block) //nolint:staticcheck // legacy PEM encryption, still in use
		if !pkcs8 && !legacy {
			continue
		}
		if s.keyPassword == "" {
			return tls.Certificate{}, configErrorf("kafka_client: ssl.key.location: %s is encrypted; "+
				"give ssl.key.password", s.keyFile)
		}
		var der []byte
		typ := block.Type
		if pkcs8 {
			typ = "PRIVATE KEY"
			der, err = decryptPKCS8(block.Bytes, s.keyPassword)
		} else {
			der, err = x509.DecryptPEMBlock(block, []byte(s.keyPassword)) //nolint:staticcheck
		}
		if err != nil {
			return tls.Certificate{}, configErrorf("kafka_client: ssl.key.password: cannot decrypt %s (%v)",
				s.keyFile, err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
		break
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, configErrorf("kafka_client: ssl.certificate.location and ssl.key.location: "+
			"cannot load %s with %s (%v)", s.certFile, s.keyFile, err)
	}
	return cert, nil
}

// saslMechanism is franz-go's mechanism for sasl.mechanisms (checked already).
func (s security) saslMechanism() sasl.Mechanism {
	switch s.mechanism {
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.username, Pass: s.password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.username, Pass: s.password}.AsSha512Mechanism()
	default:
		return plain.Auth{User: s.username, Pass: s.password}.AsMechanism()
	}
}

// kafkaSetup is what the worker makes of the client properties.
type kafkaSetup struct {
	opts     []kgo.Opt // franz-go options: TLS, mutual TLS, SASL
	ignored  []string  // properties without a franz-go equivalent (listed in a warning at start)
	security string    // e.g. SASL_SSL/SCRAM-SHA-512 (the start line shows it)
}

// kafkaOptions resolves the properties (in this process) and translates them for franz-go.
func (k kafkaClient) kafkaOptions() (kafkaSetup, error) {
	var out kafkaSetup
	props, err := k.resolved()
	if err != nil {
		return out, err
	}
	if err := k.check(props); err != nil {
		return out, err
	}
	sec := securityOf(props)
	out.security = sec.protocol
	if sec.tls() {
		cfg, err := sec.tlsConfig()
		if err != nil {
			return out, err
		}
		out.opts = append(out.opts, kgo.DialTLSConfig(cfg))
		if len(cfg.Certificates) > 0 {
			out.security += "+client-cert"
		}
	}
	if sec.sasl() {
		out.opts = append(out.opts, kgo.SASL(sec.saslMechanism()))
		out.security += "/" + sec.mechanism
	}
	for _, name := range sortedKeys(props) {
		if !translatedKP[name] {
			out.ignored = append(out.ignored, name)
		}
	}
	return out, nil
}
