package aws

import (
	"errors"
	"fmt"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	awsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/aws/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/route"
)

// maxCredentialsData is the largest credentials file a data source may
// hold (Envoy reads it with a 4096-byte limit).
const maxCredentialsData = 4096

// ProviderConfig is a compiled AwsCredentialProvider.
type ProviderConfig struct {
	Provider Provider
	// Region is where a region comes from when the filter's config has
	// none (the credentials file the config names).
	Region RegionSource
	// Missing names the providers of Envoy's default chain that the
	// environment enables but Legate does not implement (they fetch
	// credentials over the network); signing uses the others.
	Missing []string
	// Warnings are what the config asks that is not done, as in Envoy
	// (a credentials file that cannot be read: the default one is used).
	Warnings []string
}

// CompileProvider compiles an envoy.extensions.common.aws.v3.AwsCredentialProvider
// (nil: Envoy's default chain) at path, as Envoy's filters build their
// credentials provider chain:
//
//   - inline_credential: only those credentials, whatever else is set;
//   - custom_credential_provider_chain: only the providers listed;
//   - otherwise the default chain — the environment, then the credentials
//     file (credentials_file_provider changes its location or profile) —
//     and config_credential_provider adds the config file after them.
//
// Providers that fetch credentials over the network (STS
// AssumeRoleWithWebIdentity and AssumeRole, IAM Roles Anywhere, the ECS
// container and EC2 instance metadata endpoints) are not implemented: set
// in the config they are an error at their path; enabled by the
// environment in the default chain they are listed in Missing.
func CompileProvider(cp *awsv3.AwsCredentialProvider, path string) (*ProviderConfig, error) {
	out := &ProviderConfig{}
	if cp == nil {
		out.Provider = Chain{Environment{}, &File{}}
		out.Missing = missingDefaults()
		return out, nil
	}
	if err := config.CheckFields(cp, path, "inline_credential", "credentials_file_provider", "custom_credential_provider_chain",
		"environment_credential_provider", "config_credential_provider",
		"assume_role_with_web_identity_provider", "iam_roles_anywhere_credential_provider", "container_credential_provider",
		"instance_profile_credential_provider", "assume_role_credential_provider"); err != nil {
		return nil, err
	}
	if ic := cp.GetInlineCredential(); ic != nil {
		// As Envoy: with inline credentials no chain is built, and the
		// other settings have no effect.
		p := config.Join(path, "inline_credential")
		if err := config.CheckFields(ic, p, "access_key_id", "secret_access_key", "session_token"); err != nil {
			return nil, err
		}
		out.Provider = Static{AccessKeyID: ic.GetAccessKeyId(), SecretAccessKey: ic.GetSecretAccessKey(), SessionToken: ic.GetSessionToken()}
		return out, nil
	}
	for _, n := range []struct {
		field, what string
		set         bool
	}{
		{"assume_role_with_web_identity_provider", "the STS AssumeRoleWithWebIdentity credentials provider", cp.GetAssumeRoleWithWebIdentityProvider() != nil},
		{"assume_role_credential_provider", "the STS AssumeRole credentials provider", cp.GetAssumeRoleCredentialProvider() != nil},
		{"iam_roles_anywhere_credential_provider", "the IAM Roles Anywhere credentials provider", cp.GetIamRolesAnywhereCredentialProvider() != nil},
		{"container_credential_provider", "the container (ECS, EKS Pod Identity) credentials provider", cp.GetContainerCredentialProvider() != nil},
		{"instance_profile_credential_provider", "the EC2 instance profile credentials provider", cp.GetInstanceProfileCredentialProvider() != nil},
	} {
		if n.set {
			return nil, config.Errorf(config.Join(path, n.field), "%s is not implemented by legate (it fetches credentials over the network); "+
				"use inline_credential, environment_credential_provider, credentials_file_provider or config_credential_provider", n.what)
		}
	}
	if e := cp.GetEnvironmentCredentialProvider(); e != nil {
		if err := config.CheckFields(e, config.Join(path, "environment_credential_provider")); err != nil {
			return nil, err
		}
	}
	if c := cp.GetConfigCredentialProvider(); c != nil {
		if err := config.CheckFields(c, config.Join(path, "config_credential_provider")); err != nil {
			return nil, err
		}
	}
	var file *File
	if fc := cp.GetCredentialsFileProvider(); fc != nil {
		p := config.Join(path, "credentials_file_provider")
		if err := config.CheckFields(fc, p, "credentials_data_source", "profile"); err != nil {
			return nil, err
		}
		file = &File{Profile: fc.GetProfile()}
		out.Region.Profile = fc.GetProfile()
		if ds := fc.GetCredentialsDataSource(); ds != nil {
			dp := config.Join(p, "credentials_data_source")
			data, err := readDataSource(ds, dp)
			var rerr *readError
			switch {
			case errors.As(err, &rerr):
				// As Envoy: a data source that cannot be read is dropped
				// ("Invalid credential file data source") and the default
				// credentials file is used.
				out.Warnings = append(out.Warnings, fmt.Sprintf("%v: using the default credentials file instead, as Envoy", rerr.err))
			case err != nil:
				return nil, err
			default:
				file.Data = &data
				if ds.GetWatchedDirectory() != nil {
					file.Watch = ds.GetFilename()
				}
			}
			out.Region.CredentialsFile = ds.GetFilename()
		}
	}
	var chain Chain
	if cp.GetCustomCredentialProviderChain() {
		if cp.GetEnvironmentCredentialProvider() != nil {
			chain = append(chain, Environment{})
		}
		if file != nil {
			chain = append(chain, file)
		}
		if cp.GetConfigCredentialProvider() != nil {
			chain = append(chain, &File{Config: true})
		}
		if len(chain) == 0 {
			return nil, config.Errorf(config.Join(path, "custom_credential_provider_chain"), "a custom credential provider chain needs at least one credentials provider")
		}
	} else {
		if file == nil {
			file = &File{}
		}
		chain = Chain{Environment{}, file}
		if cp.GetConfigCredentialProvider() != nil {
			chain = append(chain, &File{Config: true})
		}
		out.Missing = missingDefaults()
	}
	out.Provider = chain
	return out, nil
}

// missingDefaults lists the network providers Envoy's default chain would
// add after the environment and the credentials file, given the
// environment (default_credentials_provider_chain.cc).
func missingDefaults() []string {
	var m []string
	if os.Getenv("AWS_WEB_IDENTITY_TOKEN_FILE") != "" && os.Getenv("AWS_ROLE_ARN") != "" {
		m = append(m, "STS AssumeRoleWithWebIdentity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)")
	}
	switch {
	case os.Getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") != "" || os.Getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI") != "":
		m = append(m, "container credentials (AWS_CONTAINER_CREDENTIALS_*)")
	case os.Getenv("AWS_EC2_METADATA_DISABLED") != "true":
		m = append(m, "EC2 instance metadata (set AWS_EC2_METADATA_DISABLED=true to leave it out)")
	}
	return m
}

// readError is a data source that could not be read.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

// readDataSource reads a credentials data source; a read failure is a
// *readError whose error names the path.
func readDataSource(ds *corev3.DataSource, path string) (string, error) {
	if err := config.CheckFields(ds, path, "filename", "inline_bytes", "inline_string", "environment_variable", "watched_directory"); err != nil {
		return "", err
	}
	if wd := ds.GetWatchedDirectory(); wd != nil {
		if err := config.CheckFields(wd, config.Join(path, "watched_directory"), "path"); err != nil {
			return "", err
		}
		if ds.GetFilename() == "" {
			return "", config.Errorf(config.Join(path, "watched_directory"), "watched_directory needs a filename data source")
		}
	}
	if ds.GetSpecifier() == nil {
		return "", config.Errorf(path, "a data source needs filename, inline_string, inline_bytes or environment_variable")
	}
	b, _, err := config.ReadDataSource(ds, path)
	if err != nil {
		return "", &readError{err}
	}
	if len(b) > maxCredentialsData {
		return "", &readError{config.Errorf(path, "the credentials data is %d bytes, more than the %d Envoy reads", len(b), maxCredentialsData)}
	}
	return string(b), nil
}

// CompileHeaderMatchers compiles a signing filter's match_excluded_headers
// and match_included_headers (fields of the config at path) into s's
// Exclude and Include.
func (s *Signer) CompileHeaderMatchers(exclude, include []*matcherv3.StringMatcher, path string) error {
	var err error
	if s.Exclude, err = headerMatchers(exclude, config.Join(path, "match_excluded_headers")); err != nil {
		return err
	}
	s.Include, err = headerMatchers(include, config.Join(path, "match_included_headers"))
	return err
}

func headerMatchers(ms []*matcherv3.StringMatcher, path string) ([]func(string) bool, error) {
	var out []func(string) bool
	for i, m := range ms {
		f, err := route.CompileStringMatcher(m, config.Index(path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}
