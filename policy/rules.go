package policy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/unicode/norm"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/threepid"
)

// Names of the built-in rules, as Decision.Rule reports them.
const (
	RuleEmailDomainsAllowed        = "email_domains_allowed"
	RuleEmailDomainsDenied         = "email_domains_denied"
	RuleMSISDNCountriesAllowed     = "msisdn_countries_allowed"
	RuleMSISDNCountriesDenied      = "msisdn_countries_denied"
	RuleBindIdentityServersAllowed = "bind_identity_servers_allowed"
)

// Rules are the built-in rules of the policy section. They judge the 3PIDs
// that come in (add, requestToken, bind) and never block a removal or an
// unbind: a user can always drop an address the rules no longer allow.
//
// E-mail domain rules match the domain itself and any subdomain of it
// (example.org matches a@example.org and a@mail.example.org), compared after
// folding case and Unicode compatibility forms (see foldDomain). Punycode
// (xn--) and Unicode spellings of one domain are not equated. Phone rules match
// the country calling code of the number ("44", "1"). A denied entry wins over
// an allowed one; an empty allowed list allows everything not denied.
// Identity servers are compared by the id_server clients send (a configured
// one's server_name, or the name of one a client names); an empty list allows
// any.
type Rules struct {
	emailAllowed, emailDenied         []string
	countriesAllowed, countriesDenied []int32
	bindServersAllowed                []string
}

// NewRules checks and compiles the built-in rules of cfg.
func NewRules(cfg config.Policy) (*Rules, error) {
	r := &Rules{bindServersAllowed: cfg.BindIdentityServersAllowed}
	var err error
	if r.emailAllowed, err = domains(RuleEmailDomainsAllowed, cfg.EmailDomainsAllowed); err != nil {
		return nil, err
	}
	if r.emailDenied, err = domains(RuleEmailDomainsDenied, cfg.EmailDomainsDenied); err != nil {
		return nil, err
	}
	if r.countriesAllowed, err = callingCodes(RuleMSISDNCountriesAllowed, cfg.MSISDNCountriesAllowed); err != nil {
		return nil, err
	}
	if r.countriesDenied, err = callingCodes(RuleMSISDNCountriesDenied, cfg.MSISDNCountriesDenied); err != nil {
		return nil, err
	}
	for _, s := range r.bindServersAllowed {
		if !threepid.ValidServerName(s) {
			return nil, fmt.Errorf("policy.%s: %q is not a server name", RuleBindIdentityServersAllowed, s)
		}
	}
	return r, nil
}

// domains normalises a list of e-mail domains ("Example.ORG", "@example.org"
// and "example.org." are all example.org).
func domains(key string, list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, d := range list {
		n := strings.TrimSuffix(strings.TrimPrefix(foldDomain(strings.TrimSpace(d)), "@"), ".")
		if n == "" || strings.ContainsAny(n, "@ \t/") || strings.HasPrefix(n, ".") {
			return nil, fmt.Errorf("policy.%s: %q is not a domain", key, d)
		}
		out = append(out, n)
	}
	return out, nil
}

// callingCodes parses a list of country calling codes ("44" or "+44").
func callingCodes(key string, list []string) ([]int32, error) {
	out := make([]int32, 0, len(list))
	for _, c := range list {
		n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(c), "+"))
		if err != nil || n <= 0 || n > 999 || phonenumbers.GetRegionCodeForCountryCode(n) == phonenumbers.UNKNOWN_REGION {
			return nil, fmt.Errorf("policy.%s: %q is not a country calling code (such as \"44\")", key, c)
		}
		out = append(out, int32(n))
	}
	return out, nil
}

// CheckUserThreepid implements Checker: the address rules, on add.
func (r *Rules) CheckUserThreepid(_ context.Context, c Change) (Decision, error) {
	if c.Op != OpAdd {
		return Allowed, nil
	}
	return r.checkAddress(c), nil
}

// CheckBinding implements Checker: the identity server and the address rules,
// on bind.
func (r *Rules) CheckBinding(_ context.Context, c Change) (Decision, error) {
	if c.Op != OpBind {
		return Allowed, nil
	}
	if len(r.bindServersAllowed) > 0 && !slices.Contains(r.bindServersAllowed, c.IDServer) {
		return Decision{Rule: RuleBindIdentityServersAllowed,
			Reason: fmt.Sprintf("3PIDs may not be bound on %s; allowed: %s", c.IDServer, strings.Join(r.bindServersAllowed, ", "))}, nil
	}
	return r.checkAddress(c), nil
}

// JudgesBindAddress implements AddressJudge: the address rules need the
// address; bind_identity_servers_allowed alone does not.
func (r *Rules) JudgesBindAddress() bool {
	return len(r.emailAllowed)+len(r.emailDenied)+len(r.countriesAllowed)+len(r.countriesDenied) > 0
}

func (r *Rules) checkAddress(c Change) Decision {
	switch c.Medium {
	case threepid.MediumEmail:
		return r.checkEmail(c.Address)
	case threepid.MediumMSISDN:
		return r.checkMSISDN(c.Address)
	}
	return Allowed
}

// foldDomain is the form in which e-mail domains are compared: compatibility
// forms folded (NFKC: fullwidth letters and full stops, the long s), lower
// case, and the ideographic full stop as a dot. Mail systems that resolve
// internationalised domains map these spellings to the same domain (UTS #46),
// so spam\uff0eexample must not escape a rule on spam.example.
func foldDomain(d string) string {
	return strings.ReplaceAll(strings.ToLower(norm.NFKC.String(d)), "\u3002", ".")
}

func (r *Rules) checkEmail(address string) Decision {
	domain := foldDomain(address[strings.LastIndexByte(address, '@')+1:])
	within := func(d string) bool { return domain == d || strings.HasSuffix(domain, "."+d) }
	if slices.ContainsFunc(r.emailDenied, within) {
		return Decision{Rule: RuleEmailDomainsDenied, Reason: fmt.Sprintf("e-mail addresses at %s are not allowed", domain)}
	}
	if len(r.emailAllowed) > 0 && !slices.ContainsFunc(r.emailAllowed, within) {
		return Decision{Rule: RuleEmailDomainsAllowed,
			Reason: "only e-mail addresses at " + strings.Join(r.emailAllowed, ", ") + " are allowed"}
	}
	return Allowed
}

func (r *Rules) checkMSISDN(address string) Decision {
	if len(r.countriesAllowed) == 0 && len(r.countriesDenied) == 0 {
		return Allowed
	}
	// code stays 0 for a number libphonenumber cannot place: never denied
	// by name, never allowed by an allow list.
	var code int32
	if n, err := phonenumbers.Parse("+"+address, phonenumbers.UNKNOWN_REGION); err == nil {
		code = n.GetCountryCode()
	}
	if code != 0 && slices.Contains(r.countriesDenied, code) {
		return Decision{Rule: RuleMSISDNCountriesDenied, Reason: fmt.Sprintf("phone numbers with the calling code +%d are not allowed", code)}
	}
	if len(r.countriesAllowed) > 0 && !slices.Contains(r.countriesAllowed, code) {
		allowed := make([]string, len(r.countriesAllowed))
		for i, c := range r.countriesAllowed {
			allowed[i] = "+" + strconv.Itoa(int(c))
		}
		return Decision{Rule: RuleMSISDNCountriesAllowed, Reason: "only phone numbers with the calling codes " + strings.Join(allowed, ", ") + " are allowed"}
	}
	return Allowed
}
