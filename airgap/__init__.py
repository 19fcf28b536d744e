"""The air-gapped bundle: one archive with everything a host needs to install without egress (docs/images.md).

`wheels` collects the Python wheels for the guest's interpreter (shared with the VM harness), `apt` builds the signed
local APT repository, `manifest` writes and verifies the bundle's checksums, `build` puts them together (`make bundle`).
"""
