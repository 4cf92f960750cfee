package aws

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	awsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/aws/v3"
)

// clearEnv unsets every variable the providers read.
func clearEnv(t *testing.T) {
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE",
		"AWS_CONFIG_FILE", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SIGV4A_SIGNING_REGION_SET",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_EC2_METADATA_DISABLED"} {
		t.Setenv(v, "")
	}
	t.Setenv("HOME", t.TempDir())
}

const credentialsFile = `
[default]
aws_access_key_id = default_akid
aws_secret_access_key = default_secret
region = us-east-2

  [other]
AWS_ACCESS_KEY_ID=other_akid
aws_secret_access_key=  other_secret  
aws_session_token = other_token
sigv4a_signing_region_set = us-*
[incomplete]
aws_access_key_id = only_id
`

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProfileElements(t *testing.T) {
	e := ProfileElements(credentialsFile, "other", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region")
	if e["aws_access_key_id"] != "other_akid" || e["aws_secret_access_key"] != "other_secret" || e["aws_session_token"] != "other_token" {
		t.Errorf("other: %v", e)
	}
	if _, ok := e["region"]; ok {
		t.Errorf("region read from another profile: %v", e)
	}
	if e := ProfileElements(credentialsFile, "default", "region"); e["region"] != "us-east-2" {
		t.Errorf("default: %v", e)
	}
}

func TestFileProvider(t *testing.T) {
	clearEnv(t)
	// The default file and profile: ~/.aws/credentials, default.
	home := os.Getenv("HOME")
	os.MkdirAll(filepath.Join(home, ".aws"), 0o755)
	os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte(credentialsFile), 0o600)
	f := &File{}
	if got := f.Credentials(); got != (Credentials{"default_akid", "default_secret", ""}) {
		t.Errorf("default file: %+v", got)
	}
	// AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE.
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", write(t, "creds", credentialsFile))
	t.Setenv("AWS_PROFILE", "other")
	if got := (&File{}).Credentials(); got != (Credentials{"other_akid", "other_secret", "other_token"}) {
		t.Errorf("env file and profile: %+v", got)
	}
	// A profile without both keys has no credentials.
	if got := (&File{Profile: "incomplete"}).Credentials(); got.Valid() || got != (Credentials{}) {
		t.Errorf("incomplete: %+v", got)
	}
	// Read once an hour: a change shows only after the refresh interval.
	now := time.Unix(1000, 0)
	path := write(t, "creds2", "[default]\naws_access_key_id=a\naws_secret_access_key=b\n")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", path)
	t.Setenv("AWS_PROFILE", "")
	f = &File{Now: func() time.Time { return now }}
	if got := f.Credentials(); got.AccessKeyID != "a" {
		t.Fatalf("%+v", got)
	}
	os.WriteFile(path, []byte("[default]\naws_access_key_id=c\naws_secret_access_key=d\n"), 0o600)
	if got := f.Credentials(); got.AccessKeyID != "a" {
		t.Errorf("re-read before the refresh interval: %+v", got)
	}
	now = now.Add(time.Hour)
	if got := f.Credentials(); got.AccessKeyID != "c" {
		t.Errorf("not re-read after the refresh interval: %+v", got)
	}
	// The config file: [profile NAME] sections.
	t.Setenv("AWS_CONFIG_FILE", write(t, "config", "[profile dev]\naws_access_key_id=cfg\naws_secret_access_key=cfgsecret\n[default]\naws_access_key_id=x\naws_secret_access_key=y\n"))
	if got := (&File{Config: true, Profile: "dev"}).Credentials(); got.AccessKeyID != "cfg" {
		t.Errorf("config profile: %+v", got)
	}
	if got := (&File{Config: true}).Credentials(); got.AccessKeyID != "x" {
		t.Errorf("config default: %+v", got)
	}
}

// A watched data source file is read again when it is replaced (as a
// file moved into the watched directory), at most once a second.
func TestWatchedFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "creds")
	os.WriteFile(path, []byte("[default]\naws_access_key_id=first\naws_secret_access_key=s\n"), 0o600)
	pc, err := CompileProvider(&awsv3.AwsCredentialProvider{CustomCredentialProviderChain: true, CredentialsFileProvider: &awsv3.CredentialsFileCredentialProvider{
		CredentialsDataSource: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}, WatchedDirectory: &corev3.WatchedDirectory{Path: dir}}}}, "cp")
	if err != nil {
		t.Fatal(err)
	}
	f := pc.Provider.(Chain)[0].(*File)
	now := time.Unix(1000, 0)
	f.Now = func() time.Time { return now }
	if got := f.Credentials(); got.AccessKeyID != "first" {
		t.Fatalf("%+v", got)
	}
	next := filepath.Join(dir, "next")
	os.WriteFile(next, []byte("[default]\naws_access_key_id=second\naws_secret_access_key=s\n"), 0o600)
	os.Rename(next, path)
	if got := f.Credentials(); got.AccessKeyID != "first" {
		t.Errorf("re-read within the second: %+v", got)
	}
	now = now.Add(time.Second)
	if got := f.Credentials(); got.AccessKeyID != "second" {
		t.Errorf("not re-read after the file was replaced: %+v", got)
	}
	// Without watched_directory the content is read once, at config time.
	pc, _ = CompileProvider(&awsv3.AwsCredentialProvider{CustomCredentialProviderChain: true, CredentialsFileProvider: &awsv3.CredentialsFileCredentialProvider{
		CredentialsDataSource: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}}}, "cp")
	os.WriteFile(path, []byte("[default]\naws_access_key_id=third\naws_secret_access_key=s\n"), 0o600)
	if got := pc.Provider.Credentials(); got.AccessKeyID != "second" {
		t.Errorf("unwatched data source: %+v", got)
	}
}

func TestEnvironmentAndChain(t *testing.T) {
	clearEnv(t)
	ch := Chain{Environment{}, Static{AccessKeyID: "s", SecretAccessKey: "t"}}
	if got := ch.Credentials(); got.AccessKeyID != "s" {
		t.Errorf("chain without environment: %+v", got)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "env")
	if got := ch.Credentials(); got.AccessKeyID != "s" {
		t.Errorf("an access key without a secret is not credentials: %+v", got)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
	t.Setenv("AWS_SESSION_TOKEN", "envtoken")
	if got := ch.Credentials(); got != (Credentials{"env", "envsecret", "envtoken"}) {
		t.Errorf("environment first: %+v", got)
	}
}

func TestRegion(t *testing.T) {
	clearEnv(t)
	rs := RegionSource{}
	if r, ok := rs.Region(false); ok {
		t.Errorf("region %q from nowhere", r)
	}
	t.Setenv("AWS_CONFIG_FILE", write(t, "config", "[default]\nregion = from-config\nsigv4a_signing_region_set = cfg-*\n"))
	if r, _ := rs.Region(false); r != "from-config" {
		t.Errorf("config file: %q", r)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", write(t, "creds", credentialsFile))
	if r, _ := rs.Region(false); r != "us-east-2" {
		t.Errorf("credentials file before config file: %q", r)
	}
	if r, _ := (RegionSource{Profile: "other"}).Region(true); r != "us-*" {
		t.Errorf("region set from the credentials file profile: %q", r)
	}
	if r, _ := rs.Region(true); r != "cfg-*" {
		t.Errorf("region set from the config file: %q", r)
	}
	t.Setenv("AWS_DEFAULT_REGION", "default-region")
	if r, _ := rs.Region(false); r != "default-region" {
		t.Errorf("AWS_DEFAULT_REGION: %q", r)
	}
	t.Setenv("AWS_REGION", "env-region")
	if r, _ := rs.Region(false); r != "env-region" {
		t.Errorf("AWS_REGION first: %q", r)
	}
	t.Setenv("AWS_SIGV4A_SIGNING_REGION_SET", "env-*")
	if r, _ := rs.Region(true); r != "env-*" {
		t.Errorf("AWS_SIGV4A_SIGNING_REGION_SET: %q", r)
	}
}

func TestCompileProvider(t *testing.T) {
	clearEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "env")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
	file := write(t, "creds", credentialsFile)

	// Inline: only those, whatever else is set.
	pc, err := CompileProvider(&awsv3.AwsCredentialProvider{
		InlineCredential:                  &awsv3.InlineCredentialProvider{AccessKeyId: "in", SecretAccessKey: "line"},
		InstanceProfileCredentialProvider: &awsv3.InstanceProfileCredentialProvider{},
	}, "cp")
	if err != nil || pc.Provider.Credentials().AccessKeyID != "in" {
		t.Fatalf("inline: %v %+v", err, pc)
	}
	// The default chain with a credentials file: environment first.
	fp := &awsv3.CredentialsFileCredentialProvider{Profile: "other", CredentialsDataSource: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: file}}}
	pc, err = CompileProvider(&awsv3.AwsCredentialProvider{CredentialsFileProvider: fp}, "cp")
	if err != nil || pc.Provider.Credentials().AccessKeyID != "env" || pc.Region.CredentialsFile != file || pc.Region.Profile != "other" {
		t.Fatalf("default chain: %v %+v", err, pc)
	}
	if len(pc.Missing) == 0 {
		t.Errorf("the default chain's instance metadata provider is not reported missing")
	}
	// A custom chain of the file alone.
	pc, err = CompileProvider(&awsv3.AwsCredentialProvider{CredentialsFileProvider: fp, CustomCredentialProviderChain: true}, "cp")
	if err != nil || pc.Provider.Credentials().AccessKeyID != "other_akid" || len(pc.Missing) != 0 {
		t.Fatalf("custom chain: %v %+v", err, pc)
	}
	// Inline data.
	pc, err = CompileProvider(&awsv3.AwsCredentialProvider{CustomCredentialProviderChain: true, CredentialsFileProvider: &awsv3.CredentialsFileCredentialProvider{
		CredentialsDataSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: credentialsFile}}}}, "cp")
	if err != nil || pc.Provider.Credentials().AccessKeyID != "default_akid" {
		t.Fatalf("inline data: %v %+v", err, pc)
	}
	// A custom chain of the environment and the config file: in order.
	t.Setenv("AWS_CONFIG_FILE", write(t, "config", "[default]\naws_access_key_id=cfg\naws_secret_access_key=cfgsecret\n"))
	custom := &awsv3.AwsCredentialProvider{CustomCredentialProviderChain: true,
		EnvironmentCredentialProvider: &awsv3.EnvironmentCredentialProvider{}, ConfigCredentialProvider: &awsv3.ConfigCredentialProvider{}}
	pc, err = CompileProvider(custom, "cp")
	if err != nil || pc.Provider.Credentials().AccessKeyID != "env" {
		t.Fatalf("custom chain, environment first: %v %+v", err, pc)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if got := pc.Provider.Credentials(); got.AccessKeyID != "cfg" {
		t.Errorf("custom chain, then the config file: %+v", got)
	}
	custom.EnvironmentCredentialProvider = nil
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
	if pc, _ := CompileProvider(custom, "cp"); pc.Provider.Credentials().AccessKeyID != "cfg" {
		t.Errorf("a custom chain without the environment provider used the environment")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if pc, _ := CompileProvider(nil, "cp"); len(pc.Missing) != 0 {
		t.Errorf("missing with AWS_EC2_METADATA_DISABLED: %v", pc.Missing)
	}
	// A data source that cannot be read (a missing file, over 4096 bytes)
	// is dropped with a warning and the default credentials file is used,
	// as Envoy ("Invalid credential file data source").
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	for _, ds := range []*corev3.DataSource{
		{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/creds"}, WatchedDirectory: &corev3.WatchedDirectory{Path: "/nonexistent"}},
		{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Repeat("x", 5000)}},
	} {
		pc, err := CompileProvider(&awsv3.AwsCredentialProvider{CustomCredentialProviderChain: true, CredentialsFileProvider: &awsv3.CredentialsFileCredentialProvider{
			CredentialsDataSource: ds}}, "cp")
		if err != nil || len(pc.Warnings) != 1 || !strings.Contains(pc.Warnings[0], "cp.credentials_file_provider.credentials_data_source") ||
			pc.Provider.Credentials().AccessKeyID != "default_akid" {
			t.Errorf("unreadable data source: %v %+v", err, pc)
		}
	}

	for _, tc := range []struct {
		cp   *awsv3.AwsCredentialProvider
		want string
	}{
		{&awsv3.AwsCredentialProvider{AssumeRoleWithWebIdentityProvider: &awsv3.AssumeRoleWithWebIdentityCredentialProvider{RoleArn: "r"}}, "cp.assume_role_with_web_identity_provider"},
		{&awsv3.AwsCredentialProvider{InstanceProfileCredentialProvider: &awsv3.InstanceProfileCredentialProvider{}}, "cp.instance_profile_credential_provider"},
		{&awsv3.AwsCredentialProvider{ContainerCredentialProvider: &awsv3.ContainerCredentialProvider{}}, "cp.container_credential_provider"},
		{&awsv3.AwsCredentialProvider{AssumeRoleCredentialProvider: &awsv3.AssumeRoleCredentialProvider{RoleArn: "r"}}, "cp.assume_role_credential_provider"},
		{&awsv3.AwsCredentialProvider{IamRolesAnywhereCredentialProvider: &awsv3.IAMRolesAnywhereCredentialProvider{}}, "cp.iam_roles_anywhere_credential_provider"},
		{&awsv3.AwsCredentialProvider{CustomCredentialProviderChain: true}, "cp.custom_credential_provider_chain"},
		{&awsv3.AwsCredentialProvider{CredentialsFileProvider: &awsv3.CredentialsFileCredentialProvider{
			CredentialsDataSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "x"}, WatchedDirectory: &corev3.WatchedDirectory{Path: "/tmp"}}}},
			"cp.credentials_file_provider.credentials_data_source.watched_directory"},
	} {
		_, err := CompileProvider(tc.cp, "cp")
		if err == nil || !strings.Contains(err.Error(), tc.want+":") {
			t.Errorf("error %v, want one at %s", err, tc.want)
		}
	}
}
