{{/* vim: set filetype=mustache: */}}

{{/*
Chart name, truncated to 63 characters (DNS-1123 label limit).
*/}}
{{- define "askelephant-kafka.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name, truncated to 63 characters. When the release name
already contains the chart name it is used as is.
*/}}
{{- define "askelephant-kafka.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "askelephant-kafka.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: stable for the life of a release. Never add the chart or app
version here -- Deployment selectors are immutable.
*/}}
{{- define "askelephant-kafka.selectorLabels" -}}
app.kubernetes.io/name: {{ include "askelephant-kafka.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Common labels, on every object of the chart.
*/}}
{{- define "askelephant-kafka.labels" -}}
helm.sh/chart: {{ include "askelephant-kafka.chart" . }}
{{ include "askelephant-kafka.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ include "askelephant-kafka.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: producer
app.kubernetes.io/part-of: askelephant-kafka
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "askelephant-kafka.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "askelephant-kafka.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "askelephant-kafka.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/*
Full image reference; a digest wins over the tag.
*/}}
{{- define "askelephant-kafka.image" -}}
{{- $registry := .Values.image.registry -}}
{{- $repository := .Values.image.repository -}}
{{- $ref := ternary (printf "%s/%s" $registry $repository) $repository (ne $registry "") -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $ref .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (include "askelephant-kafka.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{/*
Name of the Secret the chart creates (when it has anything to hold).
*/}}
{{- define "askelephant-kafka.secretName" -}}
{{- include "askelephant-kafka.fullname" . -}}
{{- end -}}

{{/*
librdkafka property -> environment variable name: dots become underscores,
upper-cased, prefixed with KAFKA_ (security.protocol -> KAFKA_SECURITY_PROTOCOL).
*/}}
{{- define "askelephant-kafka.kafkaEnvName" -}}
{{- printf "KAFKA_%s" (. | replace "." "_" | replace "-" "_" | upper) -}}
{{- end -}}

{{/*
Fails the render with a clear message when the values are inconsistent. Called
from the Deployment so that `helm template`, `helm install` and `helm upgrade`
all stop before anything is applied.
*/}}
{{- define "askelephant-kafka.validate" -}}
{{- $v := .Values -}}
{{- if gt (int $v.replicaCount) 1 -}}
{{- fail (printf "\n\nreplicaCount=%v is not supported: askelephant-kafka must run as a single replica, because two pollers would race on the same checkpoints (duplicate or lost change events). Use one release per API workspace instead." $v.replicaCount) -}}
{{- end -}}
{{- $a := $v.askelephant -}}
{{- if not $a.existingSecret -}}
{{- if and $a.apiKey $a.accessToken -}}
{{- fail "\n\naskelephant.apiKey and askelephant.accessToken are mutually exclusive: set exactly one of them (or askelephant.existingSecret)." -}}
{{- end -}}
{{- if not (or $a.apiKey $a.accessToken) -}}
{{- fail "\n\nNo AskElephant API credentials: set askelephant.apiKey (sk-apik_<id>.<secret>) or askelephant.accessToken, or point askelephant.existingSecret at a Secret holding one of them (keys: askelephant.existingSecretApiKeyKey / askelephant.existingSecretAccessTokenKey)." -}}
{{- end -}}
{{- else if not (or $a.existingSecretApiKeyKey $a.existingSecretAccessTokenKey) -}}
{{- fail "\n\naskelephant.existingSecret is set but both askelephant.existingSecretApiKeyKey and askelephant.existingSecretAccessTokenKey are empty: name the key that holds the credential." -}}
{{- end -}}
{{- if not $v.kafka.bootstrapServers -}}
{{- fail "\n\nkafka.bootstrapServers is required (host:port[,host:port...])." -}}
{{- end -}}
{{- if not $v.schemaRegistry.url -}}
{{- fail "\n\nschemaRegistry.url is required." -}}
{{- end -}}
{{- if and .Values.webhooks.enabled (not .Values.webhooks.secret) (not .Values.webhooks.existingSecret) -}}
{{- fail "\n\nwebhooks.enabled needs the Svix signing secret: set webhooks.secret (whsec_...) or webhooks.existingSecret." -}}
{{- end -}}
{{- $s := $v.kafka.sasl -}}
{{- $proto := upper (default "PLAINTEXT" $v.kafka.securityProtocol) -}}
{{- if and $s.mechanism (not (has $proto (list "SASL_SSL" "SASL_PLAINTEXT"))) -}}
{{- fail (printf "\n\nkafka.sasl.mechanism=%s needs kafka.securityProtocol SASL_SSL (or SASL_PLAINTEXT), not %s." $s.mechanism $proto) -}}
{{- end -}}
{{- if and (has $proto (list "SASL_SSL" "SASL_PLAINTEXT")) (not $s.mechanism) -}}
{{- fail (printf "\n\nkafka.securityProtocol=%s needs kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI)." $proto) -}}
{{- end -}}
{{- if and (include "askelephant-kafka.saslNeedsPassword" .) (not $s.existingSecret) (not (and $s.username $s.password)) -}}
{{- fail (printf "\n\nkafka.sasl.mechanism=%s needs credentials: set kafka.sasl.username and kafka.sasl.password, or kafka.sasl.existingSecret." $s.mechanism) -}}
{{- end -}}
{{- if and (or $v.kafka.tls.caSecret $v.kafka.tls.clientCertSecret) (not (has $proto (list "SSL" "SASL_SSL"))) -}}
{{- fail (printf "\n\nkafka.tls.* is set but kafka.securityProtocol=%s does not use TLS: use SSL or SASL_SSL." $proto) -}}
{{- end -}}
{{- if and (or $v.schemaRegistry.tls.caSecret $v.schemaRegistry.tls.clientCertSecret) (not (hasPrefix "https://" $v.schemaRegistry.url)) -}}
{{- fail (printf "\n\nschemaRegistry.tls.* is set but schemaRegistry.url=%s is not https://." $v.schemaRegistry.url) -}}
{{- end -}}
{{- if eq (trimSuffix "/" $v.kafka.tls.mountPath) (trimSuffix "/" $v.schemaRegistry.tls.mountPath) -}}
{{- fail "\n\nkafka.tls.mountPath and schemaRegistry.tls.mountPath must differ: the Kafka and registry files would be mounted over each other." -}}
{{- end -}}
{{- if and $v.metrics.serviceMonitor.enabled $v.metrics.podMonitor.enabled -}}
{{- fail "\n\nmetrics.serviceMonitor.enabled and metrics.podMonitor.enabled are mutually exclusive (the producer would be scraped twice)." -}}
{{- end -}}
{{- $managed := include "askelephant-kafka.kafkaManagedProperties" . | fromYaml -}}
{{- range $prop, $_ := $v.kafka.config -}}
{{- if hasKey $managed $prop -}}
{{- fail (printf "\n\nkafka.config.%s is managed by the chart value %s; set that value instead." $prop (get $managed $prop)) -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $prop, $_ := $v.kafka.config -}}
{{- $_ := set $seen $prop "kafka.config" -}}
{{- end -}}
{{- range $prop, $_ := $v.kafka.secretConfig -}}
{{- if hasKey $managed $prop -}}
{{- fail (printf "\n\nkafka.secretConfig.%s is managed by the chart value %s; set that value instead." $prop (get $managed $prop)) -}}
{{- end -}}
{{- if hasKey $seen $prop -}}
{{- fail (printf "\n\nlibrdkafka property %s is set in both %s and kafka.secretConfig." $prop (get $seen $prop)) -}}
{{- end -}}
{{- $_ := set $seen $prop "kafka.secretConfig" -}}
{{- end -}}
{{- range $v.kafka.configFromSecrets -}}
{{- if hasKey $managed .property -}}
{{- fail (printf "\n\nkafka.configFromSecrets property %s is managed by the chart value %s; set that value instead." .property (get $managed .property)) -}}
{{- end -}}
{{- if hasKey $seen .property -}}
{{- fail (printf "\n\nlibrdkafka property %s is set in both %s and kafka.configFromSecrets." .property (get $seen .property)) -}}
{{- end -}}
{{- $_ := set $seen .property "kafka.configFromSecrets" -}}
{{- end -}}
{{- end -}}

{{/*
librdkafka properties the chart sets from dedicated values (as a YAML map, so
that the validation above can look them up).
*/}}
{{- define "askelephant-kafka.kafkaManagedProperties" -}}
bootstrap.servers: kafka.bootstrapServers
security.protocol: kafka.securityProtocol
sasl.mechanism: kafka.sasl.mechanism
sasl.mechanisms: kafka.sasl.mechanism
sasl.username: kafka.sasl.username
sasl.password: kafka.sasl.password
ssl.ca.location: kafka.tls.caSecret
ssl.certificate.location: kafka.tls.clientCertSecret
ssl.key.location: kafka.tls.clientCertSecret
{{- end -}}

{{/*
Does the SASL mechanism take a username and password? ("true" or "")
*/}}
{{- define "askelephant-kafka.saslNeedsPassword" -}}
{{- if has (upper (default "" .Values.kafka.sasl.mechanism)) (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") -}}
true
{{- end -}}
{{- end -}}

{{/*
Does the chart-made Secret hold the API credential / SASL credentials /
schema registry basic auth? ("true" or "")
*/}}
{{- define "askelephant-kafka.chartSecret.apiCredential" -}}
{{- if and (not .Values.askelephant.existingSecret) (or .Values.askelephant.apiKey .Values.askelephant.accessToken) -}}
true
{{- end -}}
{{- end -}}

{{- define "askelephant-kafka.chartSecret.sasl" -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.existingSecret) .Values.kafka.sasl.username -}}
true
{{- end -}}
{{- end -}}

{{- define "askelephant-kafka.chartSecret.schemaRegistry" -}}
{{- if and .Values.schemaRegistry.basicAuth.userInfo (not .Values.schemaRegistry.basicAuth.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "askelephant-kafka.chartSecret.webhook" -}}
{{- if and .Values.webhooks.enabled .Values.webhooks.secret (not .Values.webhooks.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "askelephant-kafka.hasChartSecret" -}}
{{- if or (include "askelephant-kafka.chartSecret.apiCredential" .) (include "askelephant-kafka.chartSecret.sasl" .) (include "askelephant-kafka.chartSecret.schemaRegistry" .) (include "askelephant-kafka.chartSecret.webhook" .) .Values.kafka.secretConfig -}}
true
{{- end -}}
{{- end -}}

{{/*
A scalar value as an environment variable string. Helm reads YAML numbers as
float64, so whole numbers are printed as integers (1000000, not 1e+06).
*/}}
{{- define "askelephant-kafka.envValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{- int64 . -}}{{- else -}}{{- . -}}{{- end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}
