{{/*
Names, labels and the pieces every Switchboard container shares. Each
workload template reads top to bottom; the shared parts live here so the
edge, the workers, the setup hook and the test pod cannot drift apart.
*/}}

{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Pod names derive from it and become node ids and
consumer-group instance ids, so it is kept short (a StatefulSet appends
"-edge-<n>" and Kubernetes limits a pod's hostname to 63 characters).
*/}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "switchboard.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "switchboard.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "edge"). */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchboard.secretName" -}}
{{- default (printf "%s-secrets" (include "switchboard.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/* The image, pinned by digest when one is given. */}}
{{- define "switchboard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A duration in the forms the chart can compare (500ms, 10s, 2m, 1h) as whole
seconds, rounded up. values.schema.json restricts SB_DRAIN_GRACE to these
forms, so the grace-period check below always understands it.
*/}}
{{- define "switchboard.seconds" -}}
{{- $d := toString . }}
{{- if hasSuffix "ms" $d }}{{ div (add (trimSuffix "ms" $d | atoi) 999) 1000 }}
{{- else if hasSuffix "s" $d }}{{ trimSuffix "s" $d | atoi }}
{{- else if hasSuffix "m" $d }}{{ mul (trimSuffix "m" $d | atoi) 60 }}
{{- else if hasSuffix "h" $d }}{{ mul (trimSuffix "h" $d | atoi) 3600 }}
{{- else }}{{ fail (printf "cannot read the duration %q (use ms, s, m or h)" $d) }}
{{- end }}
{{- end }}

{{/*
The librdkafka security.protocol the kafka.tls / kafka.sasl values ask for
(SB_KAFKA_SECURITY_PROTOCOL).
*/}}
{{- define "switchboard.kafkaSecurityProtocol" -}}
{{- $k := .Values.kafka }}
{{- if and $k.tls.enabled $k.sasl.enabled }}sasl_ssl
{{- else if $k.tls.enabled }}ssl
{{- else if $k.sasl.enabled }}sasl_plaintext
{{- else }}plaintext
{{- end }}
{{- end }}

{{/*
Env entries every Kafka client needs: brokers, topic prefix, TLS and SASL
(credentials from the Secret), any other librdkafka option. Call with the
root context.
*/}}
{{- define "switchboard.kafkaEnv" -}}
{{- $k := .Values.kafka }}
- name: SB_KAFKA_BROKERS
  value: {{ $k.brokers | quote }}
- name: SB_TOPIC_PREFIX
  value: {{ $k.topicPrefix | quote }}
- name: SB_KAFKA_SECURITY_PROTOCOL
  value: {{ include "switchboard.kafkaSecurityProtocol" . | quote }}
{{- if and $k.tls.enabled $k.tls.caFromSecret }}
- name: SB_KAFKA_CA_LOCATION
  value: /etc/switchboard/kafka/ca.crt
{{- end }}
{{- if $k.sasl.enabled }}
- name: SB_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: SB_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: {{ .Values.secrets.keys.kafkaSaslUsername }}
- name: SB_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: {{ .Values.secrets.keys.kafkaSaslPassword }}
{{- end }}
{{- with $k.options }}
{{- $opts := list }}
{{- range $key, $value := . }}
{{- if kindIs "float64" $value }}
{{- /* A whole YAML number arrives as a float: 2000000, not 2e+06. */}}
{{- $value = ternary (printf "%d" (int64 $value)) (toString $value) (eq $value (float64 (int64 $value))) }}
{{- end }}
{{- $opts = append $opts (printf "%s=%v" $key $value) }}
{{- end }}
- name: SB_KAFKA_OPTIONS
  value: {{ join "," $opts | quote }}
{{- end }}
{{- end }}

{{- define "switchboard.databaseEnv" -}}
- name: SB_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: {{ .Values.secrets.keys.databaseUrl }}
{{- end }}

{{/* Logs and traces, read by every binary (core/src/telemetry.rs, core/src/traces.rs). */}}
{{- define "switchboard.telemetryEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logging.level | quote }}
- name: SB_LOG_JSON
  value: {{ .Values.logging.json | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
A component's `config` map as env entries, in name order; null values are
left out (the binary's default), lists are joined with commas.
*/}}
{{- define "switchboard.configEnv" -}}
{{- $env := list }}
{{- range $name, $value := . }}
{{- if kindIs "slice" $value }}
{{- $env = append $env (dict "name" $name "value" (join "," $value)) }}
{{- else if kindIs "float64" $value }}
{{- /* YAML numbers arrive as floats; print 1048576, not 1.048576e+06. */}}
{{- $env = append $env (dict "name" $name "value" (printf "%d" (int64 $value))) }}
{{- else if not (kindIs "invalid" $value) }}
{{- $env = append $env (dict "name" $name "value" (toString $value)) }}
{{- end }}
{{- end }}
{{- with $env }}{{ toYaml . }}{{ end }}
{{- end }}

{{/*
The CA bundles, mounted from the Secret when asked for; the PostgreSQL one
only where the container connects to the database. Call with
(dict "root" $ "database" true|false).
*/}}
{{- define "switchboard.caVolumes" -}}
{{- $root := .root }}
{{- if and $root.Values.kafka.tls.enabled $root.Values.kafka.tls.caFromSecret }}
- name: kafka-ca
  secret:
    secretName: {{ include "switchboard.secretName" $root }}
    items:
      - key: {{ $root.Values.secrets.keys.kafkaCa }}
        path: ca.crt
{{- end }}
{{- if and .database $root.Values.database.tls.caFromSecret }}
- name: postgres-ca
  secret:
    secretName: {{ include "switchboard.secretName" $root }}
    items:
      - key: {{ $root.Values.secrets.keys.postgresCa }}
        path: ca.crt
{{- end }}
{{- end }}

{{- define "switchboard.caMounts" -}}
{{- $root := .root }}
{{- if and $root.Values.kafka.tls.enabled $root.Values.kafka.tls.caFromSecret }}
- name: kafka-ca
  mountPath: /etc/switchboard/kafka
  readOnly: true
{{- end }}
{{- if and .database $root.Values.database.tls.caFromSecret }}
- name: postgres-ca
  mountPath: /etc/switchboard/postgres
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod-level settings every Switchboard pod shares. */}}
{{- define "switchboard.podSpecCommon" -}}
serviceAccountName: {{ include "switchboard.serviceAccountName" . }}
# No component talks to the Kubernetes API.
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Scheduling settings of one component's values (nodeSelector, ...). */}}
{{- define "switchboard.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
checkov (scripts/helm.sh check) findings accepted for every Switchboard pod,
each with its reason; checkov reads them from these annotations. Call with
(dict "root" $ "extra" (list ...)) for a resource's own additions.
- CKV_K8S_35 (secrets as files): the binaries read credentials only from
  their SB_* environment variables; the chart fills those from a Secret with
  secretKeyRef, never from a ConfigMap or the manifest.
- CKV_K8S_43 (image by digest) and CKV_K8S_15 (pull policy Always): only
  while image.digest is empty. Pinning is image.digest, which production
  should set; with a digest, IfNotPresent is exact and keeps restarts
  independent of the registry.
- CKV2_K8S_6 (a NetworkPolicy for each pod): only while networkPolicy.enabled
  is false, for clusters whose CNI enforces none or whose policies are
  managed elsewhere; with it on, the chart ships a policy for every pod.
*/}}
{{- define "switchboard.checkovSkips" -}}
{{- $skips := list "CKV_K8S_35=The binaries read credentials from SB_* environment variables only; the chart fills them from a Secret via secretKeyRef" }}
{{- if not .root.Values.image.digest }}
{{- $skips = append $skips "CKV_K8S_43=Pinning by digest is image.digest (set it in production); without it the image is the chart appVersion tag" }}
{{- $skips = append $skips "CKV_K8S_15=IfNotPresent keeps restarts independent of the registry; image.digest makes it exact (or set image.pullPolicy)" }}
{{- end }}
{{- if not .root.Values.networkPolicy.enabled }}
{{- $skips = append $skips "CKV2_K8S_6=networkPolicy.enabled is false in these values (clusters without an enforcing CNI or with their own policies)" }}
{{- end }}
{{- range $i, $skip := concat $skips (.extra | default list) }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end }}

{{/* The workers this release runs, as a JSON list: the notifier only when enabled. */}}
{{- define "switchboard.workers" -}}
{{- $workers := list "persister" "router" }}
{{- if .Values.notifier.enabled }}
{{- $workers = append $workers "notifier" }}
{{- end }}
{{- toJson $workers }}
{{- end }}
