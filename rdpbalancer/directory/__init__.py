"""Group sources for routing: static lists, HAProxy-style files and LDAP/AD (via ldap3, in a worker thread).

`model.GroupSnapshot` is what the router reads; `sync.DirectorySync` keeps it current. Importing this
package imports nothing heavy: `ldap3` is loaded by `rdpbalancer.directory.ldap` only.
"""
