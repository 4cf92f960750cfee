package aws

import (
	"os"
	"strings"
	"sync"
	"time"
)

// Credentials are an AWS access key pair with an optional session token.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

// Valid reports whether c can sign: it has both keys.
func (c Credentials) Valid() bool { return c.AccessKeyID != "" && c.SecretAccessKey != "" }

// Provider gives the credentials to sign with, at signing time.
type Provider interface {
	Credentials() Credentials
}

// Static credentials (Envoy's InlineCredentialProvider).
type Static Credentials

// Credentials returns c.
func (c Static) Credentials() Credentials { return Credentials(c) }

// Environment reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN (Envoy's EnvironmentCredentialsProvider).
type Environment struct{}

// Credentials reads the environment.
func (Environment) Credentials() Credentials {
	c := Credentials{
		AccessKeyID:     os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    os.Getenv("AWS_SESSION_TOKEN"),
	}
	if !c.Valid() {
		return Credentials{}
	}
	return c
}

// Chain returns the credentials of the first provider that has valid ones
// (Envoy's CredentialsProviderChain).
type Chain []Provider

// Credentials walks the chain.
func (ch Chain) Credentials() Credentials {
	for _, p := range ch {
		if c := p.Credentials(); c.Valid() {
			return c
		}
	}
	return Credentials{}
}

// fileRefresh is how long credentials read from a file are kept before
// the file is read again (Envoy's REFRESH_INTERVAL: one hour).
const fileRefresh = time.Hour

// File reads credentials from a profile of an AWS credentials file
// (Envoy's CredentialsFileCredentialsProvider) or, with Config, of an AWS
// config file (ConfigCredentialsProvider).
type File struct {
	// Data is the file's content from the config's data source; nil means
	// the file at AWS_SHARED_CREDENTIALS_FILE (AWS_CONFIG_FILE), else
	// ~/.aws/credentials (~/.aws/config), read again every hour.
	Data *string
	// Watch, with Data read from the file Watch names, reads it again
	// when it changes (a data source's watched_directory, where Envoy
	// re-reads the file when one is moved into the directory): the file
	// is checked at most once a second.
	Watch string
	// Profile is the profile ("" for AWS_PROFILE, else "default").
	Profile string
	// Config reads the config file, whose sections are "[profile NAME]"
	// (but "[default]").
	Config bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu     sync.Mutex
	cached Credentials
	at     time.Time
	read   bool
	// the watched file as last read
	fi    os.FileInfo
	size  int64
	mtime time.Time
}

// Credentials returns the profile's credentials.
func (f *File) Credentials() Credentials {
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Watch != "" {
		return f.watched(now())
	}
	if f.read && (f.Data != nil || now().Sub(f.at) < fileRefresh) {
		return f.cached
	}
	f.read, f.at = true, now()
	var content string
	if f.Data != nil {
		content = *f.Data
	} else {
		path := CredentialsFilePath()
		if f.Config {
			path = ConfigFilePath()
		}
		b, err := os.ReadFile(path)
		if err != nil {
			// As Envoy: try again after the refresh interval.
			f.cached = Credentials{}
			return f.cached
		}
		content = string(b)
	}
	f.cached = f.extract(content)
	return f.cached
}

// watched serves a watched data source file: it is read again when its
// size, modification time or inode changed.
func (f *File) watched(now time.Time) Credentials {
	if f.read && now.Sub(f.at) < time.Second {
		return f.cached
	}
	f.at = now
	fi, err := os.Stat(f.Watch)
	if err != nil || (f.read && fi.Size() == f.size && fi.ModTime().Equal(f.mtime) && os.SameFile(fi, f.fi)) {
		// Gone or unchanged: keep what was read (Envoy keeps the last
		// content too).
		if !f.read {
			f.cached = f.extract(*f.Data)
			f.read = true
		}
		return f.cached
	}
	b, err := os.ReadFile(f.Watch)
	if err != nil || len(b) > maxCredentialsData {
		if !f.read {
			f.cached = f.extract(*f.Data)
			f.read = true
		}
		return f.cached
	}
	f.fi, f.size, f.mtime, f.read = fi, fi.Size(), fi.ModTime(), true
	f.cached = f.extract(string(b))
	return f.cached
}

// extract reads the profile's credentials from a file's content.
func (f *File) extract(content string) Credentials {
	profile := f.Profile
	if profile == "" {
		profile = ProfileName()
	}
	if f.Config {
		profile = configSection(profile)
	}
	e := ProfileElements(content, profile, "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
	c := Credentials{AccessKeyID: e["aws_access_key_id"], SecretAccessKey: e["aws_secret_access_key"], SessionToken: e["aws_session_token"]}
	if !c.Valid() {
		c = Credentials{}
	}
	return c
}

// envOr is Envoy's getEnvironmentVariableOrDefault: an empty variable is
// unset.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// CredentialsFilePath is AWS_SHARED_CREDENTIALS_FILE, else
// $HOME/.aws/credentials.
func CredentialsFilePath() string {
	return envOr("AWS_SHARED_CREDENTIALS_FILE", os.Getenv("HOME")+"/.aws/credentials")
}

// ConfigFilePath is AWS_CONFIG_FILE, else $HOME/.aws/config.
func ConfigFilePath() string {
	return envOr("AWS_CONFIG_FILE", os.Getenv("HOME")+"/.aws/config")
}

// ProfileName is AWS_PROFILE, else "default".
func ProfileName() string { return envOr("AWS_PROFILE", "default") }

// configSection is a profile's section name in the config file.
func configSection(profile string) string {
	if profile == "default" {
		return profile
	}
	return "profile " + profile
}

// ProfileElements reads keys (lower case; matched in any case) from the
// section [profile] of an AWS credentials or config file, as Envoy's
// Utility::resolveProfileElements: lines are trimmed, a key is what comes
// before the first "=", the section ends at the next line starting with
// "[". Keys not found are absent.
func ProfileElements(content, profile string, keys ...string) map[string]string {
	out := map[string]string{}
	header := "[" + profile + "]"
	in := false
	for _, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if line == header {
			in = true
			continue
		}
		if !in {
			continue
		}
		if strings.HasPrefix(line, "[") {
			break
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		for _, want := range keys {
			if k == want {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	return out
}

// RegionSource says where a region comes from when the config has none.
type RegionSource struct {
	// CredentialsFile is the credentials file to read ("" for the default
	// path) and Profile its profile ("" for AWS_PROFILE).
	CredentialsFile, Profile string
}

// Region finds the region (or, for SigV4A, the region set) the way Envoy's
// RegionProviderChain does: AWS_REGION then AWS_DEFAULT_REGION
// (AWS_SIGV4A_SIGNING_REGION_SET for a region set), then the profile's
// region (sigv4a_signing_region_set) in the credentials file, then in the
// config file.
func (rs RegionSource) Region(regionSet bool) (string, bool) {
	key := "region"
	if regionSet {
		key = "sigv4a_signing_region_set"
		if v := os.Getenv("AWS_SIGV4A_SIGNING_REGION_SET"); v != "" {
			return v, true
		}
	} else {
		if v := envOr("AWS_REGION", os.Getenv("AWS_DEFAULT_REGION")); v != "" {
			return v, true
		}
	}
	path := rs.CredentialsFile
	if path == "" {
		path = CredentialsFilePath()
	}
	profile := rs.Profile
	if profile == "" {
		profile = ProfileName()
	}
	if b, err := os.ReadFile(path); err == nil {
		if v := ProfileElements(string(b), profile, key)[key]; v != "" {
			return v, true
		}
	}
	if b, err := os.ReadFile(ConfigFilePath()); err == nil {
		if v := ProfileElements(string(b), configSection(ProfileName()), key)[key]; v != "" {
			return v, true
		}
	}
	return "", false
}
