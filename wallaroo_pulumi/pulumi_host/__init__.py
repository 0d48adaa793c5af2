"""Our implementation of Pulumi's Python language host and dynamic-provider host (D2, D6).

`language_host` is the `pulumi-language-python` plugin; `exec_program` runs one program for it;
`dynamic_provider` is the `pulumi-resource-pulumi-python` plugin.
"""
