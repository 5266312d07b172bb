"""A fake Kubernetes API server for .ci/package-test: plain HTTP on 127.0.0.1:PORT,
a fixed small cluster (the `kubernetes` Service at 10.96.0.1), lists answered at
once, watches held open without events until their timeoutSeconds. Logs every request
line to LOGFILE.   python3 fakeapi.py PORT LOGFILE"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RV = "100"
META = {"resourceVersion": RV}
LISTS = {
    "/api/v1/namespaces": ("NamespaceList", "v1", [
        {"metadata": {"name": n, "resourceVersion": RV}} for n in ("default", "kube-system")]),
    "/api/v1/services": ("ServiceList", "v1", [
        {"metadata": {"name": "kubernetes", "namespace": "default", "resourceVersion": RV},
         "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                  "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}]),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSliceList", "discovery.k8s.io/v1", [
        {"metadata": {"name": "kubernetes", "namespace": "default", "resourceVersion": RV,
                      "labels": {"kubernetes.io/service-name": "kubernetes"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}],
         "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]),
    "/api/v1/pods": ("PodList", "v1", []),
}
log_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        with log_lock, open(sys.argv[2], "a") as log:
            log.write(f"{self.command} {self.path}\n")
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path not in LISTS:
            return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": "not found", "reason": "NotFound", "code": 404})
        if query.get("watch", ["0"])[0] in ("1", "true"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.flush()
            timeout = int(query.get("timeoutSeconds", ["60"])[0])
            time.sleep(min(timeout, 60))
            return
        kind, api_version, items = LISTS[url.path]
        self.reply(200, {"kind": kind, "apiVersion": api_version, "metadata": META, "items": items})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
