"""The shared kernel: errors, ids, outbound-address guard, pagination, encryption, the API kit.

Every app may import these modules; they import no app (an import contract checks it).
"""
