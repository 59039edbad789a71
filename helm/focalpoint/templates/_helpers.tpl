{{/*
Names and labels.
*/}}
{{- define "focalpoint.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "focalpoint.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "focalpoint.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "focalpoint.selectorLabels" -}}
app.kubernetes.io/name: {{ include "focalpoint.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "focalpoint.labels" -}}
helm.sh/chart: {{ include "focalpoint.chart" . }}
{{ include "focalpoint.selectorLabels" . }}
app.kubernetes.io/version: {{ include "focalpoint.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: focalpoint
{{- end }}

{{- define "focalpoint.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "focalpoint.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "focalpoint.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{- define "focalpoint.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "focalpoint.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
The store mode: "embedded" (SQLite file on a volume, exactly one replica) or "cluster"
(PostgreSQL, optional Redis, any number of replicas). store.mode "auto" picks cluster when
store.url is a postgres:// URL.
*/}}
{{- define "focalpoint.mode" -}}
{{- $mode := .Values.store.mode | default "auto" }}
{{- if eq $mode "auto" }}
{{- if or (hasPrefix "postgres://" .Values.store.url) (hasPrefix "postgresql://" .Values.store.url) }}cluster{{ else }}embedded{{ end }}
{{- else if or (eq $mode "embedded") (eq $mode "cluster") }}
{{- $mode }}
{{- else }}
{{- fail (printf "store.mode must be auto, embedded or cluster, got %q" $mode) }}
{{- end }}
{{- end }}

{{/* The SQLite URL in embedded mode. */}}
{{- define "focalpoint.sqliteUrl" -}}
{{- if .Values.store.url }}
{{- .Values.store.url }}
{{- else }}
{{- printf "sqlite://%s/focalpoint.db" (.Values.persistence.mountPath | trimSuffix "/") }}
{{- end }}
{{- end }}

{{/*
server.public_url: the value given, else the first ingress host, else the port-forward
address (fine for a first look; set it before paging real people: email ack links and
Twilio signatures use it).
*/}}
{{- define "focalpoint.publicUrl" -}}
{{- if .Values.server.publicUrl }}
{{- .Values.server.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (index .Values.ingress.hosts 0).host }}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) $host }}
{{- else }}
{{- print "http://127.0.0.1:8080" }}
{{- end }}
{{- end }}

{{/* server.secure_cookies: explicit, else true when the public URL is https. */}}
{{- define "focalpoint.secureCookies" -}}
{{- if kindIs "bool" .Values.server.secureCookies }}
{{- .Values.server.secureCookies }}
{{- else }}
{{- hasPrefix "https://" (include "focalpoint.publicUrl" .) }}
{{- end }}
{{- end }}

{{/* The Secret that holds credentials: an existing one, or the one this chart creates. */}}
{{- define "focalpoint.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "focalpoint.fullname" .) }}
{{- end }}

{{/*
Credentials as (env var, value from values.yaml, key in the Secret, optional). The chart's
own Secret holds only the non-empty ones; an existing Secret may hold any of the optional
ones (a missing key leaves the setting at its config-file value) and must hold the store
URL in cluster mode.
*/}}
{{- define "focalpoint.secretItems" -}}
{{- $items := list -}}
{{- if eq (include "focalpoint.mode" .) "cluster" }}
{{- $items = append $items (dict "env" "FOCALPOINT__STORE__URL" "value" .Values.store.url "key" .Values.secrets.keys.storeUrl "optional" false) }}
{{- end }}
{{- $items = append $items (dict "env" "FOCALPOINT__BUS__REDIS_URL" "value" .Values.bus.redisUrl "key" .Values.secrets.keys.redisUrl "optional" true) }}
{{- $items = append $items (dict "env" "FOCALPOINT__SMS__AUTH_TOKEN" "value" .Values.sms.authToken "key" .Values.secrets.keys.smsAuthToken "optional" true) }}
{{- $items = append $items (dict "env" "FOCALPOINT__EMAIL__PASSWORD" "value" .Values.email.password "key" .Values.secrets.keys.emailPassword "optional" true) }}
{{- $items = append $items (dict "env" "FOCALPOINT__WEBHOOK__SIGNING_KEY" "value" .Values.webhook.signingKey "key" .Values.secrets.keys.webhookSigningKey "optional" true) }}
{{- $items = append $items (dict "env" "FOCALPOINT__SERVER__METRICS_TOKEN" "value" .Values.metrics.token "key" .Values.secrets.keys.metricsToken "optional" true) }}
{{- toJson $items }}
{{- end }}

{{/* Rendering-time checks; included by the workload so they run on every render. */}}
{{- define "focalpoint.validate" -}}
{{- $mode := include "focalpoint.mode" . }}
{{- if eq $mode "embedded" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "\n\nfocalpoint: replicaCount=%d with the embedded SQLite store.\nSQLite mode runs exactly ONE replica (one process owns the database file). For several\nreplicas use cluster mode: --set store.url=postgres://USER:PASSWORD@HOST:5432/DB\n(and --set bus.redisUrl=redis://HOST:6379 for instant fan-out between replicas).\n" (int .Values.replicaCount)) }}
{{- end }}
{{- if not (hasPrefix "sqlite:" (include "focalpoint.sqliteUrl" .)) }}
{{- fail (printf "focalpoint: store.url must be sqlite://… or postgres://…, got %q" .Values.store.url) }}
{{- end }}
{{- $dir := printf "%s/" (.Values.persistence.mountPath | trimSuffix "/") }}
{{- if not (hasPrefix $dir (include "focalpoint.sqliteUrl" . | trimPrefix "sqlite://")) }}
{{- fail (printf "focalpoint: the SQLite file must live on the data volume (under %s; the root filesystem is read-only), got store.url=%q" $dir .Values.store.url) }}
{{- end }}
{{- else }}
{{- if and (not .Values.store.url) (not .Values.secrets.existingSecret) }}
{{- fail "focalpoint: cluster mode needs store.url (postgres://…) or secrets.existingSecret holding it under secrets.keys.storeUrl" }}
{{- end }}
{{- end }}
{{- if .Values.secrets.existingSecret }}
{{- range $item := include "focalpoint.secretItems" . | fromJsonArray }}
{{- if and $item.value (ne $item.env "FOCALPOINT__STORE__URL") }}
{{- fail (printf "focalpoint: secrets.existingSecret is set, so %s comes from that Secret; do not also set its value in values.yaml" $item.env) }}
{{- end }}
{{- end }}
{{- if and $.Values.store.url (ne (include "focalpoint.mode" .) "embedded") }}
{{- fail "focalpoint: with secrets.existingSecret the PostgreSQL URL comes from that Secret (key secrets.keys.storeUrl): leave store.url empty and set store.mode=cluster" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.token) (not .Values.secrets.existingSecret) }}
{{- fail "focalpoint: metrics.serviceMonitor.enabled needs metrics.token (16+ characters): /metrics answers only to that token" }}
{{- end }}
{{- if and .Values.metrics.token (lt (len .Values.metrics.token) 16) }}
{{- fail "focalpoint: metrics.token must be at least 16 characters" }}
{{- end }}
{{- if and .Values.bus.redisUrl (not (hasPrefix "redis" .Values.bus.redisUrl)) }}
{{- fail (printf "focalpoint: bus.redisUrl must start with redis:// or rediss://, got %q" .Values.bus.redisUrl) }}
{{- end }}
{{- if not (has .Values.sms.gateway (list "log" "twilio")) }}
{{- fail "focalpoint: sms.gateway must be log or twilio" }}
{{- end }}
{{- if not (has .Values.email.gateway (list "log" "smtp")) }}
{{- fail "focalpoint: email.gateway must be log or smtp" }}
{{- end }}
{{- if not (has .Values.email.tls (list "none" "starttls" "tls")) }}
{{- fail "focalpoint: email.tls must be none, starttls or tls" }}
{{- end }}
{{- if not (has .Values.log.format (list "text" "json")) }}
{{- fail "focalpoint: log.format must be text or json" }}
{{- end }}
{{- if not (has .Values.store.sqliteSynchronous (list "normal" "full")) }}
{{- fail "focalpoint: store.sqliteSynchronous must be normal or full" }}
{{- end }}
{{- end }}
