"""Guest images: recipes (images/<name>/recipe.toml), the build (mmdebstrap, kernel, initrd, root
disk; cached by recipe hash), the image's userland on the host (shell), and the host's Debian
mirror (apt). Imports only the base modules."""

from orchestrator.image.build import (
                                      CORE_DIR,
                                      DEFAULT_IMAGE,
                                      DHCP_FLAG,
                                      GUEST_LIBDIR,
                                      HOST_KEY_ALIAS,
                                      MARKER_FAILED,
                                      MARKER_PROBE,
                                      MARKER_READY,
                                      MARKER_UDEV,
                                      SIGNAL_TRACE,
                                      SPDK_IMAGE,
                                      Image,
                                      Recipe,
                                      choose,
                                      ensure,
                                      list_cached,
)

__all__ = ["CORE_DIR", "DEFAULT_IMAGE", "DHCP_FLAG", "GUEST_LIBDIR", "HOST_KEY_ALIAS", "MARKER_FAILED", "MARKER_PROBE",
           "MARKER_READY", "MARKER_UDEV", "SIGNAL_TRACE", "SPDK_IMAGE", "Image", "Recipe", "choose", "ensure", "list_cached"]
