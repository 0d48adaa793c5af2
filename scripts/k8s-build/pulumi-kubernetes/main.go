// The provider's own cmd/pulumi-resource-kubernetes/main.go (v4.25.0), which the
// module zip ships without its generated embed files: scripts/k8s-tools makes
// them from schema.json and terraform-mapping.json before building this.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

var providerName = "kubernetes"

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve(providerName, version.Version, pulumiSchema, terraformMapping)
}
