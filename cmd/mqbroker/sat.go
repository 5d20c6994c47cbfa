package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mqdapr/mqdapr/broker/satauth"
)

// satVerifier builds the K8S-SAT verifier the -sat-* flags configure (nil when none is given):
// TokenReview with -sat-tokenreview (in-cluster) or -sat-kubeconfig, or JWKS with -sat-issuer
// (and -sat-jwks-file, -sat-jwks-url, or the issuer's OpenID discovery). A JWKS is read at once,
// so a wrong file or URL stops the broker at start.
func satVerifier(cfg config) (satauth.Verifier, error) {
	review := cfg.SATTokenReview || cfg.SATKubeconfig != ""
	jwks := cfg.SATIssuer != "" || cfg.SATJWKSFile != "" || cfg.SATJWKSURL != ""
	switch {
	case !review && !jwks && cfg.SATAudience == "":
		return nil, nil
	case cfg.SATAudience == "":
		return nil, errors.New("K8S-SAT needs -sat-audience: the audience the clients' service-account tokens are issued for (the projected token's audience)")
	case !review && !jwks:
		return nil, errors.New("-sat-audience needs a way to verify tokens: -sat-tokenreview (in a cluster), -sat-kubeconfig FILE, or -sat-issuer with -sat-jwks-file, -sat-jwks-url or the issuer's OpenID discovery")
	case review && jwks:
		return nil, errors.New("K8S-SAT: choose TokenReview (-sat-tokenreview, -sat-kubeconfig) or JWKS (-sat-issuer, -sat-jwks-file, -sat-jwks-url), not both")
	case review:
		c, err := satauth.NewTokenReviewClient(cfg.SATKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("-sat-tokenreview: %w", err)
		}
		return &satauth.TokenReview{Client: c, Audience: cfg.SATAudience}, nil
	}
	if cfg.SATIssuer == "" {
		return nil, errors.New("-sat-jwks-file and -sat-jwks-url need -sat-issuer: the iss the tokens must carry (e.g. https://kubernetes.default.svc.cluster.local)")
	}
	if cfg.SATJWKSFile != "" && cfg.SATJWKSURL != "" {
		return nil, errors.New("K8S-SAT: give -sat-jwks-file or -sat-jwks-url, not both")
	}
	if cfg.SATJWKSURL != "" {
		if err := satauth.CheckFetchURL(cfg.SATJWKSURL); err != nil {
			return nil, fmt.Errorf("-sat-jwks-url: %w", err)
		}
	} else if cfg.SATJWKSFile == "" {
		if err := satauth.CheckFetchURL(cfg.SATIssuer); err != nil {
			return nil, fmt.Errorf("-sat-issuer (its OpenID discovery, without -sat-jwks-file or -sat-jwks-url): %w", err)
		}
	}
	j := &satauth.JWKS{Issuer: cfg.SATIssuer, Audience: cfg.SATAudience, File: cfg.SATJWKSFile, URL: cfg.SATJWKSURL}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := j.Load(ctx); err != nil {
		return nil, fmt.Errorf("K8S-SAT: %w", err)
	}
	return j, nil
}
