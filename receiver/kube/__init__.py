"""The Kubernetes adapter: the only package that imports ``kubernetes_asyncio``.

Everything else talks to the cluster through the small functions and classes exported by the
modules of this package, and sees errors from :mod:`receiver.kube.errors` only.
"""
