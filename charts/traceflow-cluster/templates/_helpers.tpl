{{/* Resource name prefix: release-chart, shortened to 52 characters so suffixes fit in 63. */}}
{{- define "traceflow-cluster.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "traceflow-cluster.adapter" -}}{{ include "traceflow-cluster.fullname" . }}-adapter{{- end -}}
{{- define "traceflow-cluster.agent" -}}{{ include "traceflow-cluster.fullname" . }}-agent{{- end -}}

{{- define "traceflow-cluster.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "traceflow-cluster.labels" -}}
{{ include "traceflow-cluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: traceflow
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "traceflow-cluster.adapterImage" -}}
{{ .Values.adapter.image.repository }}:{{ .Values.adapter.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- define "traceflow-cluster.agentImage" -}}
{{ .Values.agent.image.repository }}:{{ .Values.agent.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "traceflow-cluster.agentCASecret" -}}
{{- .Values.agentCA.existingSecret | default (printf "%s-agent-ca" (include "traceflow-cluster.fullname" .)) -}}
{{- end -}}
{{- define "traceflow-cluster.managerCAConfigMap" -}}
{{- .Values.manager.caExistingConfigMap | default (printf "%s-manager-ca" (include "traceflow-cluster.fullname" .)) -}}
{{- end -}}
{{- define "traceflow-cluster.tokenSecret" -}}
{{- .Values.bootstrapToken.existingSecret | default (printf "%s-bootstrap-token" (include "traceflow-cluster.fullname" .)) -}}
{{- end -}}

{{/* Required values, checked once; every message says what to set. */}}
{{- define "traceflow-cluster.validate" -}}
{{- if not .Values.cluster.name -}}
{{- fail "cluster.name is required: this cluster's name in the fleet (the one the bootstrap token was minted for)" -}}
{{- end -}}
{{- if not (regexMatch "^https://[^/]+$" .Values.manager.address) -}}
{{- fail "manager.address is required: the manager's URL, e.g. https://traceflow.example.com:7443" -}}
{{- end -}}
{{- if not (or .Values.manager.ca .Values.manager.caExistingConfigMap) -}}
{{- fail "manager.ca (PEM) or manager.caExistingConfigMap is required: the CA that verifies the manager" -}}
{{- end -}}
{{- if and .Values.bootstrapToken.value .Values.bootstrapToken.existingSecret -}}
{{- fail "set bootstrapToken.value or bootstrapToken.existingSecret, not both" -}}
{{- end -}}
{{- end -}}
