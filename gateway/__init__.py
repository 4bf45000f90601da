"""Code shared by ext_authz and login_app: configuration, crypto and the session store."""
